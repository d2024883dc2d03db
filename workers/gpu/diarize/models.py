"""Loading the diarization models (silero VAD, the speaker encoder) and running them on samples.

The speaker encoder is Resemblyzer's network rebuilt here from its bundled state dict: the
``resemblyzer`` package itself imports librosa and webrtcvad, which the GPU workers do not
need, so only its weight file is used. The mel front end matches Resemblyzer's (40 mel bands,
25 ms windows, 10 ms hop, power spectrum, Slaney filterbank).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from workers.gpu.diarize.weights import ENCODER, VAD, verify

__all__ = ["SAMPLE_RATE", "DiarizationModels", "load_models", "mel_frames"]

SAMPLE_RATE = 16_000
_N_FFT = 400
_HOP = 160
_N_MELS = 40
_VAD_WINDOW = 512

Samples = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class DiarizationModels:
    """The VAD and the speaker encoder, loaded once per GPU child."""

    vad: Any
    encoder: Any
    device: str

    def speech_probabilities(self, audio: Samples) -> npt.NDArray[np.float32]:
        """The VAD's speech probability for each 32 ms window (512 samples) of ``audio``."""
        import torch

        self.vad.reset_states()
        count = len(audio) // _VAD_WINDOW
        out = np.zeros(count, dtype=np.float32)
        with torch.inference_mode():
            for index in range(count):
                chunk = torch.from_numpy(audio[index * _VAD_WINDOW : (index + 1) * _VAD_WINDOW])
                out[index] = float(self.vad(chunk, SAMPLE_RATE).item())
        return out

    def embed(self, windows: list[Samples]) -> npt.NDArray[np.float32]:
        """One L2-normalised 256-d voice embedding per audio window (a batch, same length)."""
        import torch

        mels = np.stack([mel_frames(window) for window in windows])
        with torch.inference_mode():
            batch = torch.from_numpy(mels).to(self.device)
            vectors = self.encoder(batch).cpu().numpy()
        return np.asarray(vectors, dtype=np.float32)


def load_models(device: str = "cpu") -> DiarizationModels:
    """Verify both weight files against their pins and load them onto ``device``."""
    import torch
    from torch import nn

    with warnings.catch_warnings():
        # silero-vad ships TorchScript (or ONNX, which would need onnxruntime); torch 2.13
        # deprecates loading TorchScript but still does it.
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        vad = torch.jit.load(str(verify(VAD)), map_location="cpu")
    vad.eval()

    class SpeakerEncoder(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(_N_MELS, 256, 3, batch_first=True)
            self.linear = nn.Linear(256, 256)
            self.relu = nn.ReLU()

        def forward(self, mels: torch.Tensor) -> torch.Tensor:
            _, (hidden, _) = self.lstm(mels)
            embeds = self.relu(self.linear(hidden[-1]))
            norm: torch.Tensor = torch.norm(embeds, dim=1, keepdim=True).clamp_min(1e-9)
            out: torch.Tensor = embeds / norm
            return out

    encoder = SpeakerEncoder()
    checkpoint = torch.load(str(verify(ENCODER)), map_location="cpu", weights_only=True)
    state = {
        key: value
        for key, value in checkpoint["model_state"].items()
        if key.startswith(("lstm.", "linear."))
    }
    encoder.load_state_dict(state)
    encoder.to(device).eval()
    return DiarizationModels(vad=vad, encoder=encoder, device=device)


def mel_frames(samples: Samples) -> npt.NDArray[np.float32]:
    """Resemblyzer's input: (frames, 40) mel power spectrogram of 16 kHz ``samples``."""
    padded = np.pad(samples, _N_FFT // 2)
    count = 1 + (len(padded) - _N_FFT) // _HOP
    index = np.arange(_N_FFT)[None, :] + _HOP * np.arange(count)[:, None]
    frames = padded[index] * _hann()[None, :]
    power = np.abs(np.fft.rfft(frames, n=_N_FFT, axis=1)) ** 2
    return np.asarray(power @ _mel_filterbank().T, dtype=np.float32)


def _hann() -> npt.NDArray[np.float64]:
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(_N_FFT) / _N_FFT)


def _mel_filterbank() -> npt.NDArray[np.float64]:
    """librosa.filters.mel(sr=16000, n_fft=400, n_mels=40): Slaney scale and area norm."""

    def hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        linear = hz / (200.0 / 3)
        log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
        return np.where(hz >= 1000.0, log_part, linear)

    def mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        linear = mel * (200.0 / 3)
        log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
        return np.where(mel >= 15.0, log_part, linear)

    fft_hz = np.linspace(0, SAMPLE_RATE / 2, 1 + _N_FFT // 2)
    edges = np.array([0.0, SAMPLE_RATE / 2])
    low, high = hz_to_mel(edges)
    mel_hz = mel_to_hz(np.linspace(low, high, _N_MELS + 2))
    widths = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
