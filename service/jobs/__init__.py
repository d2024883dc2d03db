"""Transcription jobs over HTTP: controllers, msgspec schemas, reads, submission, formats."""
