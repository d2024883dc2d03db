"""The job options the OpenAI routes add reach ``whisper.transcribe``: task and temperature.

Whisper itself is replaced by a recorder here (the real model translating real speech is
in ``tests/e2e/test_openai_client.py``, where the ``base`` weights are installed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import whisper

from workers.gpu import whisper as steno_whisper


class _Model:
    def __init__(self, *, multilingual: bool) -> None:
        self.is_multilingual = multilingual
        self.device = torch.device("cpu")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What ``whisper.transcribe`` was asked, per call (it answers one German segment)."""
    seen: list[dict[str, Any]] = []

    def transcribe(model: Any, audio: Any, **options: Any) -> dict[str, Any]:
        seen.append(options)
        segment = {
            "id": 0,
            "start": 0.0,
            "end": 1.0,
            "text": " Good morning.",
            "tokens": [1],
            "avg_logprob": -0.1,
            "no_speech_prob": 0.0,
            "temperature": 0.0,
            "compression_ratio": 1.0,
        }
        return {"text": " Good morning.", "language": "de", "segments": [segment]}

    monkeypatch.setattr(whisper, "transcribe", transcribe)
    monkeypatch.setattr(steno_whisper, "load_audio", lambda _: np.zeros(16_000, dtype=np.float32))
    return seen


def _run(model: _Model, **options: Any) -> None:
    steno_whisper.transcribe(
        model,  # type: ignore[arg-type]
        Path("unused.wav"),
        language=None,
        word_timestamps=False,
        initial_prompt=None,
        fp16=False,
        **options,
    )


def test_a_multilingual_model_gets_the_task_and_one_temperature(
    calls: list[dict[str, Any]],
) -> None:
    _run(_Model(multilingual=True), task="translate", temperature=0.3)

    assert calls[0]["task"] == "translate"
    assert calls[0]["temperature"] == (0.3,)


@pytest.mark.parametrize("temperature", [None, 0.0])
def test_no_temperature_keeps_whispers_fallback(
    calls: list[dict[str, Any]], temperature: float | None
) -> None:
    _run(_Model(multilingual=True), temperature=temperature)

    assert calls[0]["task"] == "transcribe"
    assert calls[0]["temperature"] == (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def test_an_english_only_model_only_transcribes(calls: list[dict[str, Any]]) -> None:
    _run(_Model(multilingual=False), task="translate")

    assert (calls[0]["task"], calls[0]["language"]) == ("transcribe", "en")
