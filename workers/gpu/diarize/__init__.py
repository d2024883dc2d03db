"""Speaker diarization for the GPU pool: VAD, voice embeddings, clustering, assignment; no Celery."""
