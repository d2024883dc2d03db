"""Where a job's audio lives on disk, and removing all of it when the job goes.

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
