"""Speaker diarization on the API side: the submit options and the known speakers."""
