"""End to end: a speaker enrolled from one sentence is named in dialogues by the real GPU worker.

The voice print is computed by the GPU child at the first job that names the speaker and
kept for the next. OpenAI's own client asks for ``diarized_json`` with ``known_speaker_names``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from openai import OpenAI
from openai.types.audio import TranscriptionDiarized

from service.core.settings import Settings
from tests.audio import SENTENCES
from tests.conftest import bearer, make_key, wait_for_job
from tests.dialogue import GAP_SECONDS, RATE, dialogue, labelled_share, voice_clip, write_wav

pytestmark = pytest.mark.usefixtures("workers")

MIN_CORRECT = 0.90
# The enrolled voice (tests.dialogue.VOICES[1]), read from sentences the dialogues don't use.
ENROLLED = 1


def enrolment_clip(path: Path) -> Path:
    """Two sentences of the enrolled voice that no dialogue below says (about 5 s)."""
    pieces = [voice_clip(SENTENCES[n], ENROLLED) for n in (6, 7)]
    gap = np.zeros(int(GAP_SECONDS * RATE), dtype=np.float32)
    return write_wav(np.concatenate([pieces[0], gap, pieces[1]]), path)


def spoken_spans(segments: Sequence[dict[str, Any]]) -> list[tuple[float, float, str]]:
    """Who talks when, from the segments: each holds the floor until the next one starts."""
    spans = []
    for index, segment in enumerate(segments):
        end = segments[index + 1]["start"] if index + 1 < len(segments) else segment["end"] + 1
        spans.append((segment["start"], max(end, segment["end"]), segment["speaker"]))
    return spans


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return enrolment_clip(tmp_path_factory.mktemp("enrol") / "voice.wav")


@pytest.mark.parametrize(
    ("order", "others"),
    [((0, 1, 0, 1, 0, 1), ["SPEAKER_1"]), ((1, 0, 2, 1, 2, 0), ["SPEAKER_1", "SPEAKER_2"])],
    ids=["two-voices", "three-voices"],
)
async def test_an_enrolled_voice_is_named_and_the_others_numbered(
    api: Any, clip: Path, tmp_path: Path, order: tuple[int, ...], others: list[str]
) -> None:
    # Given a speaker enrolled from sentences of one voice
    name = f"ada {uuid.uuid4().hex[:6]}"
    with clip.open("rb") as body:
        enrolled = await api.post(
            "/v1/speakers", data={"name": name}, files={"file": ("ada.wav", body, "audio/wav")}
        )
    assert enrolled.status_code == 201, enrolled.text
    # when a dialogue of that voice and others is submitted naming the speaker
    audio, truth = dialogue(order)
    wav = write_wav(audio, tmp_path / "dialogue.wav")
    with wav.open("rb") as body:
        response = await api.post(
            "/v1/jobs",
            files={"file": ("dialogue.wav", body, "audio/wav")},
            data={"known_speakers": name},
        )
    assert response.status_code == 202, response.text
    job = await wait_for_job(api, response.json()["id"], timeout=300)
    assert job["status"] == "completed", job
    assert job["known_speakers"] == [name]
    # then the enrolled voice carries the name, each other voice its own SPEAKER_n,
    # and >= 90 % of the speech time carries its voice's label
    verbose = (
        await api.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "verbose_json"})
    ).json()
    share, mapping = labelled_share(truth, spoken_spans(verbose["segments"]))
    print(f"known speaker, {order}: {share:.1%} of speech time right, {mapping}")
    assert mapping[ENROLLED] == name, (mapping, verbose["segments"])
    assert sorted(v for k, v in mapping.items() if k != ENROLLED) == others, mapping
    assert share >= MIN_CORRECT, (share, mapping, verbose["segments"])
    text = (await api.get(f"/v1/jobs/{job['id']}/transcript", params={"format": "text"})).text
    assert f"{name}:" in text
    # and the voice print the GPU worker computed is kept for later jobs
    speaker = (await api.get(f"/v1/speakers/{name}")).json()
    assert speaker["voice_print_ready"] is True


@pytest.fixture(scope="module")
def openai_key(settings: Settings) -> str:
    return make_key(settings, "openai-speakers", owner=f"openai-speakers-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def client(live_api: str, openai_key: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{live_api}/v1", api_key=openai_key) as openai_client:
        yield openai_client


def test_openais_client_gets_diarized_json_with_known_speaker_names(
    client: OpenAI, live_api: str, openai_key: str, clip: Path, tmp_path: Path
) -> None:
    # Given a speaker enrolled with Steno's route, under the OpenAI client's key
    with clip.open("rb") as body:
        enrolled = httpx.post(
            f"{live_api}/v1/speakers",
            headers=bearer(openai_key),
            data={"name": "agent"},
            files={"file": ("agent.wav", body, "audio/wav")},
            timeout=60,
        )
    assert enrolled.status_code == 201, enrolled.text
    audio, truth = dialogue((0, 1, 0, 1))
    wav = write_wav(audio, tmp_path / "call.wav")
    # when OpenAI's client asks for diarized_json naming the speaker
    with wav.open("rb") as body:
        result = client.audio.transcriptions.create(
            model="whisper-1",
            file=body,
            response_format="diarized_json",
            known_speaker_names=["agent"],
            chunking_strategy="auto",
        )
    # then it parses as OpenAI's type; the enrolled voice is "agent" and the other "A"
    assert isinstance(result, TranscriptionDiarized), type(result)
    assert result.task == "transcribe" and result.text.strip()
    spans = spoken_spans([s.model_dump() for s in result.segments])
    share, mapping = labelled_share(truth, spans)
    print(f"diarized_json: {share:.1%} of speech time right, {mapping}")
    assert mapping == {ENROLLED: "agent", 0: "A"}, (mapping, result.segments)
    assert share >= MIN_CORRECT, (share, result.segments)
    assert result.usage is not None and result.usage.type == "duration"
    # and a name the owner has not enrolled is OpenAI's 400, naming the field
    with wav.open("rb") as body, pytest.raises(Exception) as refused:
        client.audio.transcriptions.create(
            model="whisper-1",
            file=body,
            response_format="diarized_json",
            known_speaker_names=["nobody"],
        )
    error: Any = refused.value
    assert error.status_code == 400 and error.code == "unknown_speaker", error
    assert error.param == "known_speaker_names"
