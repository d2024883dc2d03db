"""Deciding with ffprobe whether a file is audio Steno can transcribe, on real files."""

from __future__ import annotations

import shutil
import subprocess
import wave
from collections.abc import Sequence
from pathlib import Path

import pytest

from service.core.audio import content_type_accepted, probe_audio, run_process
from service.core.errors import AudioTooLong, EmptyFile, InvalidAudio
from tests.audio import speak
from tests.listener import listening

SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One spoken sentence in several containers, and files that are not audio."""
    folder = tmp_path_factory.mktemp("media")
    for suffix in (".wav", ".ogg", ".mp3", ".flac"):
        speak(SENTENCE, folder / f"speech{suffix}")
    ffmpeg = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-f", "lavfi"]
    subprocess.run([*ffmpeg[:5], "-i", folder / "speech.wav", folder / "speech.opus"], check=True)
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
        await probe_audio(media / "speech.mp3", max_seconds=60, run=hanging)


@pytest.mark.parametrize("suffix", [".wav", ".ogg", ".flac", ".opus"])
async def test_wav_ogg_and_flac_are_measured_from_the_header_as_ffprobe_does(
    media: Path, suffix: str
) -> None:
    # given speech in a container whose header states its length
    path = media / f"speech{suffix}"
    reported = await probe_audio(path, max_seconds=60)

    # when it is probed with no ffprobe at hand
    async def no_ffprobe(argv: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]:
        raise AssertionError("ffprobe should not run for this file")

    info = await probe_audio(path, max_seconds=60, run=no_ffprobe)

    # then the header gives what ffprobe gives (Opus: ffprobe counts a few ms of padding)
    code, out, _ = await run_process(["ffprobe", "-v", "error", "-show_format", str(path)], 10)
    ffprobe_seconds = float(out.decode().split("duration=", 1)[1].split()[0])
    assert code == 0
    assert info == reported
    assert info.duration == pytest.approx(ffprobe_seconds, abs=0.01)


async def test_a_wav_cut_short_is_left_to_ffprobe(media: Path, tmp_path: Path) -> None:
    # given a WAV whose data chunk claims more bytes than the file holds
    path = tmp_path / "cut.wav"
    path.write_bytes((media / "speech.wav").read_bytes()[:20_000])
    calls: list[Sequence[str]] = []

    async def counting(argv: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]:
        calls.append(argv)
        return await run_process(argv, timeout)

    # when it is probed
    info = await probe_audio(path, max_seconds=60, run=counting)

    # then ffprobe measured it (the header alone is not trusted)
    assert len(calls) == 1
    assert 0 < info.duration < wav_seconds(media / "speech.wav")


async def test_a_wav_longer_than_the_limit_is_refused_from_its_header(media: Path) -> None:
    # given speech a little longer than the allowed length, in a WAV
    limit = wav_seconds(media / "speech.wav") - 0.5

    # when it is probed
    # then it is refused as too long, as ffprobe's reading would be
    with pytest.raises(AudioTooLong, match=f"at most {limit:.0f} s"):
        await probe_audio(media / "speech.wav", max_seconds=limit)


def playlist(kind: str, url: str) -> str:
    """A playlist of ``kind`` (hls or ffconcat) whose one entry is ``url``."""
    if kind == "hls":
        return f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{url}\n#EXT-X-ENDLIST\n"
    return f"ffconcat version 1.0\nfile {url}\n"


async def test_ffprobe_may_open_only_local_files(media: Path) -> None:
    # given a loopback listener, and a runner that starts ffprobe with the options probe_audio
    # chose but a URL on that listener as its input
    with listening() as server:

        async def on_the_network(argv: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]:
            return await run_process([*argv[:-1], f"{server.url}/speech.wav"], timeout)

        # when the file is probed
        # then it is refused as invalid audio, and ffprobe never connected
        with pytest.raises(InvalidAudio):
            await probe_audio(media / "speech.mp3", max_seconds=60, run=on_the_network)
    assert server.requests == []


@pytest.mark.parametrize("kind", ["hls", "ffconcat"])
async def test_a_playlist_pointing_at_the_network_is_not_followed(
    tmp_path: Path, kind: str
) -> None:
    # given an upload that is a playlist naming audio on a loopback listener
    with listening() as server:
        upload = tmp_path / "upload.audio"
        upload.write_text(playlist(kind, f"{server.url}/speech.wav"))

        # when it is probed
        # then it is invalid audio, and nothing was fetched
        with pytest.raises(InvalidAudio):
            await probe_audio(upload, max_seconds=60)
    assert server.requests == []


@pytest.mark.parametrize(
    "name", ["-speech.wav", "http:/127.0.0.1:{port}/speech.wav", "concat:speech.wav"]
)
async def test_a_name_that_reads_like_an_option_or_a_url_is_a_local_file(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # given speech stored under a relative path that ffprobe would take for an option or a URL
    with listening() as server:
        monkeypatch.chdir(tmp_path)
        path = Path(name.format(port=server.port))
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(media / "speech.wav", path)

        # when it is probed
        info = await probe_audio(path, max_seconds=60)

    # then the local file is what was measured, and nothing was fetched
    assert info.duration == pytest.approx(wav_seconds(media / "speech.wav"), abs=0.1)
    assert server.requests == []


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
