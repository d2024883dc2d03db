"""Webhooks over HTTP: the signing secret per key, a job's deliveries, redelivery, URL checks."""
