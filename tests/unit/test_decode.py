"""Decoding audio for Whisper with ffmpeg: whisper's own samples, from local files only."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import whisper.audio

from tests.audio import speak
from tests.listener import listening
from workers.gpu.decode import AudioDecodeError, load_audio

SENTENCE = "Decoding must give Whisper the very same samples."


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sentence at 16 kHz (wav, ogg), at espeak-ng's 22.05 kHz, and as 44.1 kHz stereo mp3."""
    folder = tmp_path_factory.mktemp("decode")
    speak(SENTENCE, folder / "speech.wav")
    speak(SENTENCE, folder / "speech.ogg")
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-w", folder / "espeak.wav", SENTENCE],
        check=True,
        capture_output=True,
    )
    ffmpeg = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error"]
    subprocess.run(
        [*ffmpeg, "-i", folder / "speech.wav", "-ac", "2", "-ar", "44100", folder / "stereo.mp3"],
        check=True,
    )
    return folder


@pytest.mark.parametrize("name", ["speech.wav", "speech.ogg", "espeak.wav", "stereo.mp3"])
def test_the_samples_are_whispers_own(media: Path, name: str) -> None:
    # given speech in a container, rate and channel layout
    path = media / name

    # when it is decoded here and by openai-whisper
    ours = load_audio(path)
    theirs = whisper.audio.load_audio(str(path))

    # then both are the same 16 kHz mono float32 samples
    assert ours.dtype == np.float32
    assert ours.shape == theirs.shape
    assert len(ours) > whisper.audio.SAMPLE_RATE
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    assert np.abs(ours).max() > 0.05


@pytest.mark.parametrize("kind", ["hls", "ffconcat"])
def test_a_playlist_pointing_at_the_network_is_refused(tmp_path: Path, kind: str) -> None:
    # given stored audio that is a playlist naming a file on a loopback listener
    with listening() as server:
        url = f"{server.url}/speech.wav"
        path = tmp_path / "job.audio"
        path.write_text(
            f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{url}\n#EXT-X-ENDLIST\n"
            if kind == "hls"
            else f"ffconcat version 1.0\nfile {url}\n"
        )

        # when it is decoded
        # then it fails the way whisper's loader does, without naming where the file is
        with pytest.raises(AudioDecodeError, match=r"^Failed to load audio: ") as caught:
            load_audio(path)

    # and nothing was fetched
    assert server.requests == []
    assert str(tmp_path) not in str(caught.value)
    assert isinstance(caught.value, RuntimeError)


@pytest.mark.parametrize("name", ["-speech.wav", "http:/127.0.0.1:{port}/speech.wav"])
def test_a_name_that_reads_like_an_option_or_a_url_is_a_local_file(
    media: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # given speech stored under a relative path that ffmpeg would take for an option or a URL
    with listening() as server:
        monkeypatch.chdir(tmp_path)
        path = Path(name.format(port=server.port))
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(media / "speech.wav", path)

        # when it is decoded
        samples = load_audio(path)

    # then the local file was decoded, and nothing was fetched
    np.testing.assert_array_equal(samples, load_audio(media / "speech.wav"))
    assert server.requests == []


def test_a_file_that_is_not_audio_fails_like_whisper(tmp_path: Path) -> None:
    # given a text file
    path = tmp_path / "secret-store" / "job.audio"
    path.parent.mkdir()
    path.write_text("meeting notes, not audio\n" * 10)

    # when it is decoded
    # then the error says why on its first line, without the stored path
    with pytest.raises(AudioDecodeError) as caught:
        load_audio(path)
    first = str(caught.value).splitlines()[0]
    assert first.startswith("Failed to load audio: ")
    assert "Invalid data" in first
    assert "secret-store" not in str(caught.value)


def test_a_decode_past_its_timeout_is_stopped(media: Path) -> None:
    # given a timeout no ffmpeg run can meet
    # when the speech is decoded under it
    # then it is stopped and reported as a failure to load
    with pytest.raises(AudioDecodeError, match="longer than"):
        load_audio(media / "speech.wav", timeout=0.001)
