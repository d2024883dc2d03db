"""Where a job's audio (and a known speaker's clip) lives on disk; removing a job's.

The API writes uploads here and the IO workers write fetched audio; ``DELETE
/v1/jobs/{id}`` removes it.
"""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path


def incoming_path(audio_dir: Path, job_id: uuid.UUID) -> Path:
    """Where a job's audio lives while and after it is received."""
    return audio_dir / f"{job_id}.audio"


def remove_audio(audio_dir: Path, job_id: uuid.UUID, audio_path: str | None) -> None:
    """Remove the job's stored audio and any partial download left by a killed fetch."""
    paths = {*audio_dir.glob(f"{job_id}.*")}
    if audio_path:
        paths.add(Path(audio_path))
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def speaker_clip_path(audio_dir: Path, speaker_id: uuid.UUID) -> Path:
    """Where a known speaker's clip lives: beside the jobs' audio, which the GPU workers
    read already, in a folder of its own that the retention sweep (``<job id>.*``) skips."""
    return audio_dir / "speakers" / f"{speaker_id}.audio"
