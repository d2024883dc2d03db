"""Whisper inference speed on this machine: real-time factor per model and device.

Speech is synthesised with espeak-ng (about 30 s), each installed model transcribes it three
times after warm-up; we report min/median/max wall time and audio seconds per wall second.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from service.core.settings import load_settings
from tests.audio import SENTENCES, speak, word_error_rate
from workers.gpu.whisper import choose_device, load_model, transcribe

# Distinct sentences only: repeating them trips Whisper's compression check and its random
# temperature fallback, which makes the word error rate noisy.
TEXT = " ".join(SENTENCES)
RUNS = 3


def run() -> dict[str, Any]:
    """Transcribe the same speech with each installed model; figures per model."""
    settings = load_settings()
    device = choose_device(settings.whisper_device)
    figures: dict[str, Any] = {"device": device, "runs": RUNS, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        clip = speak(TEXT, Path(tmp) / "speech.wav", rate=140)
        for name in ("tiny.en", "base"):
            if not (settings.models_dir / f"{name}.pt").is_file():
                continue
            model = load_model(name, settings.models_dir, device)
            walls: list[float] = []
            for _ in range(RUNS):
                started = time.perf_counter()
                result = transcribe(
                    model,
                    clip,
                    language="en",
                    word_timestamps=False,
                    initial_prompt=None,
                    fp16=device.startswith("cuda"),
                )
                walls.append(time.perf_counter() - started)
            median = statistics.median(walls)
            figures["models"][name] = {
                "audio_seconds": round(result.duration, 1),
                "wall_seconds_min_median_max": [
                    round(min(walls), 2),
                    round(median, 2),
                    round(max(walls), 2),
                ],
                "realtime_factor_median": round(result.duration / median, 1),
                "word_error_rate": round(word_error_rate(TEXT, result.text), 3),
            }
    return figures
