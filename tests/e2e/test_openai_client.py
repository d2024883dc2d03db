"""End to end with OpenAI's own Python client, unchanged: Steno's key, Steno's base URL.

Every call goes through a real API process, Redis, the workers and Whisper (tiny.en); each
request is a normal Steno job, visible at ``/v1/jobs/{id}`` with the same key.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.audio import (
    Transcription,
    TranscriptionTextDeltaEvent,
    TranscriptionTextDoneEvent,
    TranscriptionVerbose,
)

from service.core.settings import Settings
from tests.audio import SENTENCES, speak, word_error_rate
from tests.conftest import WorkerProcess, bearer, make_key, start_api

SPOKEN = f"{SENTENCES[3]} {SENTENCES[7]}"
MAX_WER = 0.25

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture(scope="module")
def key(settings: Settings) -> str:
    """A key of an owner of its own."""
    return make_key(settings, "openai-client", owner=f"openai-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def client(live_api: str, key: str) -> Iterator[OpenAI]:
    """OpenAI's client, pointed at Steno."""
    with OpenAI(base_url=f"{live_api}/v1", api_key=key) as openai_client:
        yield openai_client


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two spoken sentences as 16 kHz mono WAV."""
    return speak(SPOKEN, tmp_path_factory.mktemp("openai") / "speech.wav")


@contextlib.contextmanager
def _deprecated_translations() -> Iterator[None]:
    """The openai package marks ``audio.translations.create`` deprecated; it is still
    OpenAI's translation API, and what its clients call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="deprecated", category=DeprecationWarning)
        yield


def test_json_is_openais_transcription(client: OpenAI, speech: Path, wer_log: object) -> None:
    with speech.open("rb") as audio:
        result = client.audio.transcriptions.create(model="whisper-1", file=audio)

    assert isinstance(result, Transcription)
    wer = word_error_rate(SPOKEN, result.text)
    wer_log("openai json", wer, result.text)  # type: ignore[operator]
    assert wer <= MAX_WER, result.text
    assert result.usage is not None and result.usage.type == "duration"
    assert result.usage.seconds >= 4


@pytest.mark.parametrize("fmt", ["text", "srt", "vtt"])
def test_text_formats_are_plain_text(client: OpenAI, speech: Path, fmt: str) -> None:
    with speech.open("rb") as audio:
        result = client.audio.transcriptions.create(
            model="tiny.en", file=audio, response_format=fmt, language="en"
        )

    assert isinstance(result, str)
    assert word_error_rate(SPOKEN, _spoken_text(result, fmt)) <= MAX_WER, result
    if fmt == "srt":
        assert result.startswith("1\n00:00:00,000 --> ")
    elif fmt == "vtt":
        assert result.startswith("WEBVTT\n\n00:00:00.000 --> ")


def _spoken_text(body: str, fmt: str) -> str:
    """The cue texts of an SRT or WebVTT body (the body itself for text)."""
    lines = body.splitlines()
    skip = {"WEBVTT", ""}
    return " ".join(ln for ln in lines if ln not in skip and "-->" not in ln and not ln.isdigit())


@pytest.mark.parametrize(
    "granularities,words,segments",
    [(None, False, True), (["word"], True, False), (["word", "segment"], True, True)],
)
def test_verbose_json_has_what_the_granularities_ask(
    client: OpenAI,
    speech: Path,
    granularities: list[str] | None,
    words: bool,
    segments: bool,
) -> None:
    extra = {"timestamp_granularities": granularities} if granularities else {}
    with speech.open("rb") as audio:
        result = client.audio.transcriptions.create(
            model="whisper-1",
            file=audio,
            response_format="verbose_json",
            **extra,  # type: ignore[arg-type]
        )

    assert isinstance(result, TranscriptionVerbose)
    assert result.language == "english"
    assert result.duration == pytest.approx(speech.stat().st_size / 32000, abs=0.2)
    assert word_error_rate(SPOKEN, result.text) <= MAX_WER
    assert (result.words is not None) is words
    assert (result.segments is not None) is segments
    if words:
        assert result.words and len(result.words) >= 10
        first, last = result.words[0], result.words[-1]
        assert 0 <= first.start <= first.end <= last.start <= last.end <= result.duration + 0.5
    if segments:
        assert result.segments and result.segments[0].text
        assert result.segments[-1].end <= result.duration + 0.5


def test_a_stream_is_deltas_then_the_text(client: OpenAI, speech: Path, wer_log: object) -> None:
    with speech.open("rb") as audio:
        stream = client.audio.transcriptions.create(model="whisper-1", file=audio, stream=True)
        events = list(stream)

    deltas = [e for e in events if isinstance(e, TranscriptionTextDeltaEvent)]
    assert deltas and isinstance(events[-1], TranscriptionTextDoneEvent), events
    assert events[: len(deltas)] == deltas
    text = events[-1].text
    assert "".join(d.delta for d in deltas) == text
    wer = word_error_rate(SPOKEN, text)
    wer_log("openai stream", wer, text)  # type: ignore[operator]
    assert wer <= MAX_WER, text


def test_the_answer_names_a_normal_steno_job(
    client: OpenAI, speech: Path, live_api: str, key: str
) -> None:
    with speech.open("rb") as audio:
        raw = client.audio.transcriptions.with_raw_response.create(
            model="whisper-1", file=audio, temperature=0.0, prompt="A meeting."
        )

    job_id = raw.headers["Steno-Job-Id"]
    transcription = raw.parse()
    job = httpx.get(f"{live_api}/v1/jobs/{job_id}", headers=bearer(key)).json()
    assert job["status"] == "completed" and job["model"] == "tiny.en"
    stored = httpx.get(f"{live_api}/v1/jobs/{job_id}/transcript", headers=bearer(key)).json()
    assert stored["text"] == transcription.text


def test_openais_errors_come_as_openais_exceptions(client: OpenAI, speech: Path) -> None:
    with (
        speech.open("rb") as audio,
        _deprecated_translations(),
        pytest.raises(openai.BadRequestError) as english_only,
    ):
        client.audio.translations.create(model="whisper-1", file=audio)
    assert english_only.value.code == "validation_error" and english_only.value.param == "model"

    with speech.open("rb") as audio, pytest.raises(openai.NotFoundError) as unknown:
        client.audio.transcriptions.create(model="whisper-9", file=audio)
    assert unknown.value.code == "model_not_found"

    with OpenAI(base_url=str(client.base_url), api_key="stn_0123456789_nope") as stranger:
        with speech.open("rb") as audio, pytest.raises(openai.AuthenticationError) as refused:
            stranger.audio.transcriptions.create(model="whisper-1", file=audio)
    assert refused.value.code == "invalid_api_key"


def test_a_client_that_gives_up_leaves_the_job_running(
    speech: Path, live_api: str, key: str
) -> None:
    # given a client that stops waiting right after its upload
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{live_api}/v1/audio/transcriptions",
            headers=bearer(key),
            files={"file": ("gone.wav", speech.read_bytes(), "audio/wav")},
            data={"model": "whisper-1"},
            timeout=httpx.Timeout(10.0, read=0.3),
        )

    # then its job completes all the same
    deadline = time.monotonic() + 120
    while True:
        jobs = httpx.get(f"{live_api}/v1/jobs", headers=bearer(key)).json()["items"]
        gone = [j for j in jobs if j["filename"] == "gone.wav"]
        if gone and gone[0]["status"] in ("completed", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, gone
        time.sleep(0.5)
    assert gone[0]["status"] == "completed", gone


@pytest.fixture(scope="module")
def multilingual_api(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API that also serves ``base`` (only where its weights are installed)."""
    if not (settings.models_dir / "base.pt").is_file():
        pytest.skip(f"no base weights in {settings.models_dir} (steno models install base)")
    process: WorkerProcess
    process, base = start_api(settings, tmp_path_factory.mktemp("api-base"), extra_models=("base",))
    yield base
    process.stop()


def test_a_multilingual_model_translates_into_english(
    multilingual_api: str, key: str, tmp_path: Path
) -> None:
    # given German speech
    raw = tmp_path / "de-raw.wav"
    german = tmp_path / "de.wav"
    subprocess.run(
        [
            "espeak-ng",
            "-v",
            "de",
            "-s",
            "140",
            "-w",
            str(raw),
            "Guten Morgen. Das Wetter ist heute sehr schön, und wir gehen in den Park.",
        ],
        check=True,
    )
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-y",
            "-loglevel",
            "error",
            "-i",
            str(raw),
            "-ar",
            "16000",
            "-ac",
            "1",
            str(german),
        ],
        check=True,
    )
    client = OpenAI(base_url=f"{multilingual_api}/v1", api_key=key, timeout=300)

    # when base transcribes it, and translates it
    with german.open("rb") as audio:
        heard = client.audio.transcriptions.create(model="base", file=audio, language="de")
    with german.open("rb") as audio, _deprecated_translations():
        raw_answer = client.audio.translations.with_raw_response.create(
            model="base", file=audio, response_format="verbose_json"
        )
    translated = raw_answer.parse()

    # then the transcript is German, the translation is another text, made as a translate job
    assert "guten" in heard.text.lower(), heard.text
    assert translated.text.strip() and "guten" not in translated.text.lower(), translated.text
    body = raw_answer.http_response.json()
    assert body["task"] == "translate" and body["language"] == "german"
    job_id = raw_answer.headers["Steno-Job-Id"]
    job = httpx.get(f"{multilingual_api}/v1/jobs/{job_id}", headers=bearer(key)).json()
    assert job["status"] == "completed" and job["model"] == "base"
    client.close()
