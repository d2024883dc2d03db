"""Speaker diarization on the API side: the submit options and (later) known voice prints."""
