"""The word error rate of trimmed windows (``STENO_WHISPER_TRIM_PADDING``) against 30 s ones.

``workers/gpu/padding.py`` encodes a short window's content and at least 2 s of its padding
instead of 30 s; Whisper was trained on 30 s windows only, so this checks that transcripts do
not get worse. 150 espeak-ng clips, unlike the batching bench's (30 other sentences, one to
three per clip, five voices, three speaking rates, a fixed seed: about 1-15 s each), are
transcribed by tiny.en with int8 MLPs (the CPU default) one after another, first with 30 s
windows as openai-whisper encodes them, then trimmed. Reported: each way's wall seconds and
mean word error rate, by clip length too, and how many clips each way transcribed better.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from service.core.settings import load_settings
from tests.audio import audio_seconds, speak, word_error_rate
from workers.gpu.whisper import load_model, transcribe

CLIPS = 150
SEED = 7
VOICES = ("en-us", "en", "en-us+f3", "en+m3", "en-us+f2")
RATES = (140, 160, 180)
# (shortest, longest) seconds of each reported length bucket.
BUCKETS = ((0, 3), (3, 5), (5, 7), (7, 10), (10, 30))
SENTENCES = (
    "Open the window before the room gets too warm.",
    "The train to Boston leaves from platform four.",
    "She painted the fence a bright shade of green.",
    "My brother works at a hospital near the river.",
    "Can you send me the invoice by the end of the day?",
    "The children played football in the park until dark.",
    "He forgot his umbrella at the coffee shop again.",
    "The museum has a new exhibit about ancient maps.",
    "Turn left at the second traffic light.",
    "Our neighbors adopted a dog from the shelter.",
    "The price of bread went up again this month.",
    "I need to renew my passport before the summer.",
    "The pilot announced that we would land early.",
    "Fresh vegetables are sold at the market every Saturday.",
    "The server restarted twice during the night.",
    "Please close the door quietly when you leave.",
    "The concert was cancelled because of the storm.",
    "They built a wooden bridge over the stream.",
    "We should plant more trees along the main road.",
    "The doctor asked me to come back next Tuesday.",
    "A strong wind knocked over the garden chairs.",
    "The students finished their project a week early.",
    "Call the bank and ask about the missing payment.",
    "The old clock in the hall stopped at midnight.",
    "He reads the newspaper every morning with his tea.",
    "The company hired twenty new engineers this year.",
    "Keep the receipt in case you want to return it.",
    "The river flooded the fields after the heavy rain.",
    "Her favorite book is about a journey across the desert.",
    "We waited for the bus for almost an hour.",
)


def corpus(tmp: Path) -> list[tuple[Path, str, float]]:
    """The clips: (path, text, seconds), the same on every run."""
    rng = random.Random(SEED)
    clips = []
    for i in range(CLIPS):
        text = " ".join(rng.sample(SENTENCES, rng.choice((1, 1, 1, 2, 2, 3))))
        voice, rate = VOICES[i % len(VOICES)], rng.choice(RATES)
        path = speak(text, tmp / f"clip{i:03d}.wav", voice=voice, rate=rate)
        clips.append((path, text, audio_seconds(path)))
    return clips


def _mean(values: list[float]) -> float:
    return round(statistics.fmean(values), 3) if values else 0.0


def run() -> dict[str, Any]:
    """30 s windows against trimmed ones over the same clips: wall seconds and WER."""
    settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="steno-bench-padding-") as tmp:
        clips = corpus(Path(tmp))
        errors: dict[str, list[float]] = {}
        figures: dict[str, Any] = {"clips": CLIPS, "model": settings.whisper_model}
        for way, trim in (("full_windows", False), ("trimmed", True)):
            model = load_model(
                settings.whisper_model, settings.models_dir, "cpu", cpu_int8=True, trim_padding=trim
            )
            began = time.perf_counter()
            options = {"language": "en", "word_timestamps": False, "initial_prompt": None}
            texts = [transcribe(model, path, fp16=False, **options).text for path, _, _ in clips]
            wall = time.perf_counter() - began
            errors[way] = [
                word_error_rate(ref, hyp) for (_, ref, _), hyp in zip(clips, texts, strict=True)
            ]
            figures[way] = {
                "wall_seconds": round(wall, 2),
                "word_error_rate_mean": _mean(errors[way]),
            }
    full, trimmed = errors["full_windows"], errors["trimmed"]
    figures["by_seconds"] = {
        f"{lo}-{hi}": {
            "clips": len(chosen := [k for k, (_, _, s) in enumerate(clips) if lo <= s < hi]),
            "full_windows": _mean([full[k] for k in chosen]),
            "trimmed": _mean([trimmed[k] for k in chosen]),
        }
        for lo, hi in BUCKETS
    }
    figures["trimmed_better"] = sum(t < f for f, t in zip(full, trimmed, strict=True))
    figures["trimmed_worse"] = sum(t > f for f, t in zip(full, trimmed, strict=True))
    figures["speedup_trimmed"] = round(
        figures["full_windows"]["wall_seconds"] / figures["trimmed"]["wall_seconds"], 2
    )
    return figures
