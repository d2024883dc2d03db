"""Speaker diarization for the GPU pool: VAD, embeddings, clustering, assignment; no Celery."""
