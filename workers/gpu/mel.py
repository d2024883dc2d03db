"""Whisper's log-mel spectrogram without the STFT of its 30 s of zero padding.

openai-whisper's ``transcribe`` pads every file with 30 s of zeros before its one STFT, so
that the last window can be cut at any point: for a 6 s clip, five sixths of the STFT is of
silence, and with the other task threads of a batched worker doing the same, it was about a
fifth of the GPU worker's CPU. A frame whose samples are all zeros has an STFT of exact zeros,
so ``log_mel_spectrogram`` computes the STFT of the audio and enough of the padding for every
frame that touches the audio (and for the reflection at the end), and zeros for the rest;
the mel filters, the log and the normalisation then run over the same full width as
openai-whisper's. The result is the same tensor, bit for bit
(``tests/integration/test_whisper_model.py``).
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
import torch.nn.functional as F
from whisper import audio as whisper_audio

__all__ = ["install_log_mel", "log_mel_spectrogram"]

# Zeros kept after the audio: every frame touching it (a window reaches N_FFT / 2 past its
# centre) and stft's reflection at the end (N_FFT / 2 samples) see zeros as they would.
_KEPT_PADDING = whisper_audio.N_FFT + whisper_audio.HOP_LENGTH


def log_mel_spectrogram(
    audio: Any, n_mels: int = 80, padding: int = 0, device: Any = None
) -> torch.Tensor:
    """``whisper.audio.log_mel_spectrogram`` with the same arguments and the same result."""
    if padding <= _KEPT_PADDING or device is not None or isinstance(audio, str):
        return _whisper(audio, n_mels, padding, device)
    samples = audio if torch.is_tensor(audio) else torch.from_numpy(audio)
    if samples.ndim != 1:
        return _whisper(audio, n_mels, padding, device)
    kept = F.pad(samples, (0, _KEPT_PADDING))
    window = torch.hann_window(whisper_audio.N_FFT).to(samples.device)
    stft = torch.stft(
        kept, whisper_audio.N_FFT, whisper_audio.HOP_LENGTH, window=window, return_complex=True
    )
    magnitudes = stft[..., :-1].abs() ** 2
    frames = (len(samples) + padding) // whisper_audio.HOP_LENGTH
    magnitudes = F.pad(magnitudes, (0, frames - magnitudes.shape[-1]))

    filters = whisper_audio.mel_filters(samples.device, n_mels)
    mel_spec = filters @ magnitudes
    log_spec = torch.clamp(mel_spec, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def _whisper(audio: Any, n_mels: int, padding: int, device: Any) -> torch.Tensor:
    whole: torch.Tensor = whisper_audio.log_mel_spectrogram(audio, n_mels, padding, device)
    return whole


def install_log_mel() -> None:
    """Make openai-whisper's ``transcribe`` use ``log_mel_spectrogram`` (its module only)."""
    # `import whisper.transcribe` would yield the function: whisper/__init__ re-exports
    # transcribe under the submodule's name.
    module: Any = importlib.import_module("whisper.transcribe")
    module.log_mel_spectrogram = log_mel_spectrogram
