"""Test helper: dialogues spoken by distinct espeak-ng voices, with the true turn boundaries."""

from __future__ import annotations

import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tests.audio import SENTENCES

# Voices Resemblyzer's encoder tells apart (cosine similarity <= 0.7 between any two):
# a slow low-pitched male, a fast high-pitched female and the Klatt synthesiser.
VOICES: tuple[tuple[str, ...], ...] = (
    ("-v", "en-us", "-p", "20", "-s", "130"),
    ("-v", "en-us+f3", "-p", "80", "-s", "170"),
    ("-v", "en-us+klatt4", "-p", "60", "-s", "150"),
)
GAP_SECONDS = 0.4
RATE = 16_000
_RAW_OUT = ("-ar", str(RATE), "-ac", "1", "-f", "f32le", "-")
_RAW_IN = ("-ar", str(RATE), "-ac", "1", "-i", "-")


def voice_clip(text: str, voice: int) -> npt.NDArray[np.float32]:
    """``text`` read by ``VOICES[voice]``, 16 kHz mono, leading/trailing silence trimmed."""
    with tempfile.TemporaryDirectory(prefix="steno-dialogue-") as tmp:
        raw = Path(tmp) / "espeak.wav"
        subprocess.run(["espeak-ng", *VOICES[voice], "-w", str(raw), text], check=True)
        decoded = subprocess.run(
            [*("ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(raw)), *_RAW_OUT],
            check=True,
            capture_output=True,
        ).stdout
    samples = np.frombuffer(decoded, dtype=np.float32)
    loud = np.flatnonzero(np.abs(samples) > 0.02)
    return samples[loud[0] : loud[-1] + 1].copy()


def dialogue(
    order: Sequence[int],
) -> tuple[npt.NDArray[np.float32], list[tuple[float, float, int]]]:
    """``order``'s voices, a sentence each, 0.4 s apart: the audio and (start, end, voice)."""
    pieces: list[npt.NDArray[np.float32]] = []
    truth: list[tuple[float, float, int]] = []
    at = 0.0
    for number, voice in enumerate(order):
        clip = voice_clip(SENTENCES[number % len(SENTENCES)], voice)
        truth.append((at, at + len(clip) / RATE, voice))
        pieces += [clip, np.zeros(int(GAP_SECONDS * RATE), dtype=np.float32)]
        at += len(clip) / RATE + GAP_SECONDS
    return np.concatenate(pieces), truth


def write_wav(samples: npt.NDArray[np.float32], path: Path) -> Path:
    """Write float samples as a 16 kHz mono WAV file."""
    subprocess.run(
        [*("ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-f", "f32le"), *_RAW_IN, str(path)],
        input=samples.tobytes(),
        check=True,
    )
    return path


def labelled_share(
    truth: Sequence[tuple[float, float, int]], spans: Sequence[tuple[float, float, str]]
) -> tuple[float, dict[int, str]]:
    """Share of true speech time whose label is its voice's label (each voice's most common
    label, all distinct, else 0.0), and that mapping from voice to label."""
    step = 0.01
    true_at: list[int] = []
    said_at: list[str] = []
    for start, end, voice in truth:
        for t in np.arange(start, end, step):
            true_at.append(voice)
            said_at.append(next((who for a, b, who in spans if a <= t < b), ""))
    mapping = {
        voice: Counter(s for v, s in zip(true_at, said_at, strict=True) if v == voice).most_common(
            1
        )[0][0]
        for voice in set(true_at)
    }
    if len(set(mapping.values())) != len(mapping):
        return 0.0, mapping
    right = sum(1 for v, s in zip(true_at, said_at, strict=True) if mapping[v] == s)
    return right / len(true_at), mapping
