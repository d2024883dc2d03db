"""End to end: a two-voice dialogue through the API and the real GPU worker with diarize=true."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for_job
from tests.dialogue import dialogue, write_wav

pytestmark = pytest.mark.usefixtures("workers")


async def test_a_diarized_job_labels_each_voice(api: Any, tmp_path: Path) -> None:
    # Given a dialogue of two distinct voices taking turns
    audio, _truth = dialogue((0, 1, 0, 1))
    wav = write_wav(audio, tmp_path / "dialogue.wav")
    # when it is uploaded with diarize=true
    with wav.open("rb") as body:
        response = await api.post(
            "/v1/jobs",
            files={"file": ("dialogue.wav", body, "audio/wav")},
            data={"diarize": "true", "max_speakers": "4"},
        )
    assert response.status_code == 202, response.text
    job = await wait_for_job(api, response.json()["id"], timeout=300)
    assert job["status"] == "completed", job
    # then every segment has a speaker, two in all, alternating as the voices did
    verbose = (
        await api.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "verbose_json"})
    ).json()
    speakers = [s["speaker"] for s in verbose["segments"]]
    assert set(speakers) == {"SPEAKER_1", "SPEAKER_2"}, verbose["segments"]
    assert "words" not in verbose, "words were decoded for diarization only"
    text = (await api.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "text"})).text
    lines = text.splitlines()
    assert [line.split(":")[0] for line in lines] == ["SPEAKER_1", "SPEAKER_2"] * 2, text
    vtt = (await api.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "vtt"})).text
    assert "<v SPEAKER_2>" in vtt


async def test_speaker_options_are_validated(api: Any) -> None:
    response = await api.post(
        "/v1/jobs",
        json={
            "audio_url": "http://127.0.0.1:9/a.wav",
            "diarize": True,
            "min_speakers": 3,
            "max_speakers": 2,
        },
    )
    assert response.status_code == 422, response.text
