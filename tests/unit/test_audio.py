"""Deciding with ffprobe whether a file is audio Steno can transcribe, on real files."""

from __future__ import annotations

import subprocess
import wave
from collections.abc import Sequence
from pathlib import Path

import pytest

from service.core.audio import content_type_accepted, probe_audio
from service.core.errors import AudioTooLong, EmptyFile, InvalidAudio
from tests.audio import speak

SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One spoken sentence in several containers, and files that are not audio."""
    folder = tmp_path_factory.mktemp("media")
    for suffix in (".wav", ".ogg", ".mp3", ".flac"):
        speak(SENTENCE, folder / f"speech{suffix}")
    ffmpeg = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-f", "lavfi"]
    subprocess.run(
        [*ffmpeg, "-i", "color=c=black:s=64x64:d=1", "-an", "-c:v", "mpeg4", folder / "video.mp4"],
        check=True,
    )
    subprocess.run(
        [*ffmpeg, "-i", "color=c=red:s=8x8", "-frames:v", "1", folder / "image.png"], check=True
    )
    (folder / "notes.txt").write_text("These are meeting notes, not audio.\n" * 20)
    (folder / "empty.wav").write_bytes(b"")
    return folder


def wav_seconds(path: Path) -> float:
    """The duration a WAV file's header declares, read without ffprobe."""
    with wave.open(str(path)) as audio:
        return audio.getnframes() / audio.getframerate()


@pytest.mark.parametrize("suffix", [".wav", ".ogg", ".mp3", ".flac"])
async def test_speech_in_each_container_is_measured(media: Path, suffix: str) -> None:
    # given the same sentence spoken and saved in one container
    expected = wav_seconds(media / "speech.wav")
    assert expected > 1.0

    # when it is probed
    info = await probe_audio(media / f"speech{suffix}", max_seconds=60)

    # then its duration is the spoken length (lossy encoders pad by a few frames)
    assert info.duration == pytest.approx(expected, abs=0.1)
    assert info.codec != "unknown"
    assert info.format_name != "unknown"


async def test_a_text_file_is_not_audio(media: Path) -> None:
    # given a text file
    # when it is probed
    # then it is invalid audio (ffprobe reads long text as an ANSI-art video, short text not
    # at all: either way there is no audio)
    with pytest.raises(InvalidAudio):
        await probe_audio(media / "notes.txt", max_seconds=60)


async def test_an_undecodable_file_does_not_reveal_where_it_is_stored(media: Path) -> None:
    # given a file ffprobe can't open, stored under a private path
    path = media / "secret-store" / "upload.wav"
    path.parent.mkdir(exist_ok=True)
    path.write_text("hello\n")

    # when it is probed
    with pytest.raises(InvalidAudio, match="not audio that can be decoded") as caught:
        await probe_audio(path, max_seconds=60)

    # then the detail explains why without naming the path
    assert "secret-store" not in caught.value.detail
    assert "Invalid data" in caught.value.detail


async def test_an_empty_file_is_refused_as_empty(media: Path) -> None:
    # given a file with no bytes
    # when it is probed
    # then it is refused for being empty, not for being invalid
    with pytest.raises(EmptyFile):
        await probe_audio(media / "empty.wav", max_seconds=60)


@pytest.mark.parametrize("name", ["video.mp4", "image.png"])
async def test_media_without_an_audio_stream_is_refused(media: Path, name: str) -> None:
    # given a file ffprobe can read that holds only pictures
    # when it is probed
    # then it is refused for having no audio stream
    with pytest.raises(InvalidAudio, match="no audio stream"):
        await probe_audio(media / name, max_seconds=60)


async def test_audio_longer_than_the_limit_is_refused(media: Path) -> None:
    # given speech a little longer than the allowed length
    path = media / "speech.ogg"
    limit = wav_seconds(media / "speech.wav") - 0.5

    # when it is probed
    # then it is refused as too long, naming the limit
    with pytest.raises(AudioTooLong, match=f"at most {limit:.0f} s"):
        await probe_audio(path, max_seconds=limit)


async def test_a_probe_that_hangs_is_invalid_audio(media: Path) -> None:
    # given an ffprobe run that never finishes
    async def hanging(argv: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]:
        raise TimeoutError

    # when the file is probed
    # then it is refused as invalid audio rather than hanging the request
    with pytest.raises(InvalidAudio, match="too long"):
        await probe_audio(media / "speech.wav", max_seconds=60, run=hanging)


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        (None, True),
        ("", True),
        ("audio/wav", True),
        ("audio/mpeg", True),
        ("AUDIO/OGG; codecs=opus", True),
        ("video/mp4", True),
        ("video/webm", True),
        ("application/octet-stream", True),
        ("application/ogg", True),
        ("application/x-ogg", True),
        ("binary/octet-stream", True),
        ("text/plain", False),
        ("image/png", False),
        ("application/json", False),
        ("application/pdf", False),
        ("multipart/form-data", False),
        ("audiox/wav", False),
    ],
)
def test_content_types_that_may_hold_audio(content_type: str | None, accepted: bool) -> None:
    # given a declared content type
    # when it is judged
    # then only types that may carry audio pass (a missing one is left to the probe)
    assert content_type_accepted(content_type) is accepted
