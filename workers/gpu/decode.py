"""Decoding an audio file to Whisper's input (16 kHz mono float32) with ffmpeg, local files only.

openai-whisper's own ``load_audio`` hands ffmpeg the path as it is, with every protocol allowed
and no time limit. Here ffmpeg gets an absolute ``file:`` URL (no name can pass for an option or
pick a protocol), ``-protocol_whitelist file`` (nothing inside the file reaches the network) and
a timeout; the samples are the same as whisper's.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["DECODE_TIMEOUT_SECONDS", "SAMPLE_RATE", "AudioDecodeError", "load_audio"]

SAMPLE_RATE = 16_000
# Decoding runs at hundreds of times real time; four hours of audio takes a minute or two.
DECODE_TIMEOUT_SECONDS = 600.0


class AudioDecodeError(RuntimeError):
    """ffmpeg could not decode the file (or took too long); the message starts as whisper's.

    ``Failed to load audio: `` and ffmpeg's last error, with the file's path left out.
    """


def load_audio(
    path: Path, *, sample_rate: int = SAMPLE_RATE, timeout: float = DECODE_TIMEOUT_SECONDS
) -> npt.NDArray[np.float32]:
    """The audio in ``path`` as mono float32 samples in [-1, 1) at ``sample_rate``.

    The same array ``whisper.audio.load_audio`` returns for that file. Raises
    ``AudioDecodeError`` when ffmpeg fails, or when it runs past ``timeout`` seconds (then
    it is killed).
    """
    absolute = path.absolute()
    source = f"file:{absolute}"
    # fmt: off
    argv = [
        "ffmpeg", "-nostdin", "-v", "error", "-threads", "0",
        "-protocol_whitelist", "file", "-i", source,
        "-f", "s16le", "-ac", "1", "-acodec", "pcm_s16le", "-ar", str(sample_rate), "-",
    ]
    # fmt: on
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise AudioDecodeError(
            f"Failed to load audio: decoding took longer than {timeout:.0f} s"
        ) from exc
    if done.returncode != 0:
        # ffmpeg names the file in its errors; the path is the server's to keep private.
        text = done.stderr.decode(errors="replace")
        lines = text.replace(source, "input").replace(str(absolute), "input").strip().splitlines()
        reason = lines[-1][:200] if lines else f"ffmpeg exited with status {done.returncode}"
        raise AudioDecodeError(f"Failed to load audio: {reason}")
    samples = np.frombuffer(done.stdout, np.int16).astype(np.float32)
    samples /= 32768.0
    return samples
