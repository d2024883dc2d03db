"""The diarization weights: files inside the silero-vad and Resemblyzer wheels, sha256-pinned.

Nothing is downloaded: ``pip install`` brings the files, and ``verify`` checks each one against
its pinned digest before a model is built from it (at load, and by ``steno models install
diarization``), so a changed or corrupted wheel is refused rather than silently used.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ENCODER", "VAD", "WEIGHTS", "DiarizationWeightsError", "PinnedFile", "verify"]


class DiarizationWeightsError(RuntimeError):
    """A diarization weight file is missing or its checksum differs from the pin."""


@dataclass(frozen=True, slots=True)
class PinnedFile:
    """One weight file inside an installed package, with the sha256 it must have."""

    package: str
    relative_path: str
    sha256: str

    def path(self) -> Path:
        """Where the installed package keeps the file (the package is located, not imported)."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise DiarizationWeightsError(
                f"package {self.package!r} is not installed (pip install '.[gpu]')"
            )
        return Path(next(iter(spec.submodule_search_locations))) / self.relative_path


# silero-vad 6.2.3: the TorchScript VAD (16 kHz, 512-sample windows).
VAD = PinnedFile(
    "silero_vad",
    "data/silero_vad.jit",
    "e1122837f4154c511485fe0b9c64455f7b929c96fbb8d79fbdb336383ebd3720",
)
# Resemblyzer 0.1.4: the GE2E speaker encoder (3-layer LSTM, 256-d embeddings).
ENCODER = PinnedFile(
    "resemblyzer",
    "pretrained.pt",
    "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
)
WEIGHTS = (VAD, ENCODER)


def verify(pinned: PinnedFile) -> Path:
    """The file's path once its sha256 matches the pin; raises ``DiarizationWeightsError``."""
    path = pinned.path()
    if not path.is_file():
        raise DiarizationWeightsError(f"{pinned.package}: {pinned.relative_path} is missing")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != pinned.sha256:
        raise DiarizationWeightsError(
            f"{path}: sha256 {digest.hexdigest()} does not match the pinned {pinned.sha256}"
        )
    return path
