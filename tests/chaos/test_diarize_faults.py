"""Scenario 15: a diarize job whose GPU child is SIGKILLed mid-diarization completes once."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from tests.chaos.conftest import Chaos
from tests.dialogue import dialogue, write_wav


async def test_gpu_child_sigkilled_mid_diarization_completes_once(chaos: Chaos) -> None:
    """15. SIGKILL the GPU child mid-diarization: the job completes once, speakers labelled"""
    # Given a two-voice dialogue submitted with diarize=true, whose diarization lasts a while
    await chaos.open(transcribe_delay_seconds=0.0, diarize_delay_seconds=6.0)
    chaos.start_all()
    audio, _truth = dialogue((0, 1, 0, 1))
    wav = write_wav(audio, chaos.folder / "dialogue.wav")
    with wav.open("rb") as body:
        response = await chaos.api.post(
            "/v1/jobs",
            files={"file": ("dialogue.wav", body, "audio/wav")},
            data={"diarize": "true", "max_speakers": "4"},
        )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    # when the child running it is SIGKILLed once the job is diarizing
    deadline = time.monotonic() + 180
    while (found := await chaos.running_child([job_id], stage="diarizing")) is None:
        assert time.monotonic() < deadline, chaos.log_tail()
        await asyncio.sleep(0.1)
    os.kill(found[1], signal.SIGKILL)

    # then it is claimed again and completes exactly once, every segment with its speaker
    views = await chaos.audit([job_id], timeout=240)
    assert views[job_id]["status"] == "completed", views
    assert views[job_id]["attempts"] >= 2, views
    transcript = await chaos.api.get(
        f"/v1/jobs/{job_id}/transcript", params={"format": "verbose_json"}
    )
    speakers = {segment.get("speaker") for segment in transcript.json()["segments"]}
    assert speakers == {"SPEAKER_1", "SPEAKER_2"}, transcript.json()["segments"]
