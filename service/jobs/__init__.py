"""Transcription jobs: HTTP controllers, msgspec schemas and the job state machine."""
