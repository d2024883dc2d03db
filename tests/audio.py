"""Test helpers: synthetic speech (espeak-ng + ffmpeg) and word error rate."""

from __future__ import annotations

import re
import subprocess
import tempfile
import unicodedata
from pathlib import Path

import jiwer

_FORMATS = frozenset({".wav", ".ogg", ".mp3", ".flac"})

# Eight plain, distinct sentences: tiny.en transcribes espeak-ng's reading of them well, and
# they do not repeat (repetition trips Whisper's compression check and its random fallback).
SENTENCES = (
    "The meeting starts at nine in the morning.",
    "Please bring the quarterly report and your notes.",
    "We will talk about the new office and the budget.",
    "The weather will be cold and windy for the rest of the week.",
    "A small boat drifted slowly across the quiet lake.",
    "Our team shipped the new release on Friday afternoon.",
    "Remember to water the plants before you leave the house.",
    "The library closes early on public holidays.",
)


def speak(text: str, path: Path, *, rate: int = 150, voice: str = "en-us") -> Path:
    """Write ``text`` spoken by espeak-ng (``voice``, ``rate`` words/min) to ``path``; return
    ``path``.

    The container follows the suffix (.wav, .ogg, .mp3, .flac); the audio is 16 kHz mono.
    Raises ValueError for another suffix and CalledProcessError if espeak-ng or ffmpeg fails.
    """
    suffix = path.suffix.lower()
    if suffix not in _FORMATS:
        raise ValueError(f"unsupported audio suffix {path.suffix!r}; use one of {sorted(_FORMATS)}")
    with tempfile.TemporaryDirectory(prefix="steno-speak-") as tmp:
        raw = Path(tmp) / "espeak.wav"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-s", str(rate), "-w", str(raw), text],
            check=True,
            capture_output=True,
        )
        # espeak-ng writes 22.05 kHz; whisper and the service expect 16 kHz mono.
        convert = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-i", str(raw)]
        convert += ["-ar", "16000", "-ac", "1", str(path)]
        subprocess.run(convert, check=True, capture_output=True)
    return path


def audio_seconds(path: Path) -> float:
    """How long the audio in ``path`` plays, in seconds (decoded as the GPU worker does)."""
    from workers.gpu.decode import SAMPLE_RATE, load_audio

    return len(load_audio(path)) / SAMPLE_RATE


def normalise(text: str) -> str:
    """Lowercase, drop apostrophes, turn other punctuation/symbols into spaces, collapse spaces.

    Numbers stay as written ("42" and "forty two" differ).
    """
    text = text.lower().replace("'", "").replace("\u2019", "")
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return re.sub(r"\s+", " ", text).strip()


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference`` after ``normalise`` on both.

    An empty reference scores 0.0 against an empty hypothesis and 1.0 otherwise.
    """
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    if not hyp:
        return 1.0
    return float(jiwer.wer(ref, hyp))
