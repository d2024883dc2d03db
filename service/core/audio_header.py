"""Reading an audio file's duration from its header, in Python, for the commonest containers.

Probing with ffprobe costs a process start (tens of ms of CPU, more under a burst of
uploads); WAV (PCM), Ogg (Vorbis, Opus) and FLAC state their length in a few bytes. Only a
header that is fully consistent is trusted: anything unusual (another codec, a chained or
multiplexed Ogg, a WAV whose data runs past the file, no sample count) returns None, and
the caller asks ffprobe, which also writes the error a client gets for a bad file.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# WAV format tags read here, and the codec name ffprobe gives each (by bits per sample).
_PCM, _FLOAT, _EXTENSIBLE = 0x0001, 0x0003, 0xFFFE
_PCM_CODECS = {8: "pcm_u8", 16: "pcm_s16le", 24: "pcm_s24le", 32: "pcm_s32le"}
_FLOAT_CODECS = {32: "pcm_f32le", 64: "pcm_f64le"}
# How far into a WAV file the data chunk may start (past LIST, fact, bext... chunks).
_WAV_HEADER_LIMIT = 1 << 20
# An Ogg page is at most 27 + 255 + 255 * 255 bytes: the last page starts within this.
_OGG_TAIL = 65_307
_OPUS_RATE = 48_000


@dataclass(frozen=True, slots=True)
class HeaderInfo:
    """What a header says: the container, the codec and the duration in seconds."""

    format_name: str
    codec: str
    duration: float


def read_header(path: Path) -> HeaderInfo | None:
    """The duration from the header of a WAV, Ogg or FLAC file; None to ask ffprobe."""
    try:
        with path.open("rb") as file:
            magic = file.read(12)
            size = path.stat().st_size
            if magic[:4] == b"RIFF" and magic[8:12] == b"WAVE":
                return _wav(file, size)
            if magic[:4] == b"OggS":
                return _ogg(file, size)
            if magic[:4] == b"fLaC":
                return _flac(file)
    except (OSError, struct.error, ValueError):
        return None
    return None


def _wav(file: BinaryIO, size: int) -> HeaderInfo | None:
    fmt: tuple[int, int, int, int, int, int] | None = None
    offset = 12
    while offset + 8 <= min(size, _WAV_HEADER_LIMIT):
        file.seek(offset)
        chunk, length = struct.unpack("<4sI", file.read(8))
        body = offset + 8
        if chunk == b"fmt " and 16 <= length <= 1024:
            raw = file.read(length)
            tag, channels, rate, byte_rate, align, bits = struct.unpack("<HHIIHH", raw[:16])
            if tag == _EXTENSIBLE and length >= 40:
                tag = struct.unpack("<H", raw[24:26])[0]
            fmt = (tag, channels, rate, byte_rate, align, bits)
        elif chunk == b"data":
            if fmt is None or length == 0 or body + length > size:
                return None  # streamed or truncated WAVs: ffprobe decides
            return _pcm_info(fmt, length)
        offset = body + length + (length & 1)
    return None


def _pcm_info(fmt: tuple[int, int, int, int, int, int], length: int) -> HeaderInfo | None:
    tag, channels, rate, byte_rate, align, bits = fmt
    codecs = {_PCM: _PCM_CODECS, _FLOAT: _FLOAT_CODECS}.get(tag, {})
    codec = codecs.get(bits)
    consistent = (
        codec is not None
        and 1 <= channels <= 8
        and 1_000 <= rate <= 384_000
        and align == channels * bits // 8
        and byte_rate == rate * align
    )
    if not consistent or codec is None:
        return None
    return HeaderInfo("wav", codec, length / byte_rate)


def _ogg(file: BinaryIO, size: int) -> HeaderInfo | None:
    file.seek(0)
    page = file.read(27 + 255)
    version, flags, _, serial = struct.unpack("<BBqI", page[4:18])
    segments = page[26]
    if version != 0 or not flags & 0x02:  # the first page must begin the stream
        return None
    if len(page) < 27 + segments or segments == 0:
        return None
    file.seek(27 + segments)
    packet = file.read(64)
    if packet[:7] == b"\x01vorbis":
        rate, skip, codec = struct.unpack("<I", packet[12:16])[0], 0, "vorbis"
    elif packet[:8] == b"OpusHead":
        rate, skip, codec = _OPUS_RATE, struct.unpack("<H", packet[10:12])[0], "opus"
    else:
        return None
    # A second stream's first page next would mean a multiplexed file: leave it to ffprobe.
    file.seek(27 + segments + sum(page[27 : 27 + segments]))
    following = file.read(6)
    if following[:4] == b"OggS" and following[5] & 0x02:
        return None
    start = max(0, size - _OGG_TAIL)
    file.seek(start)
    tail = file.read()
    at = tail.rfind(b"OggS")
    while at >= 0:
        if len(tail) - at >= 27 and tail[at + 4] == 0:
            granule, last_serial = struct.unpack("<qI", tail[at + 6 : at + 18])
            if granule >= 0:
                if last_serial != serial or not 1_000 <= rate <= 384_000:
                    return None  # a chained Ogg: its length is not one granule position
                duration = (granule - skip) / rate
                return HeaderInfo("ogg", codec, duration) if duration > 0 else None
        at = tail.rfind(b"OggS", 0, at)
    return None


def _flac(file: BinaryIO) -> HeaderInfo | None:
    file.seek(4)
    (block,) = struct.unpack(">I", file.read(4))
    if block >> 24 & 0x7F != 0 or block & 0xFFFFFF != 34:  # STREAMINFO comes first
        return None
    info = file.read(34)
    packed = int.from_bytes(info[10:18], "big")
    rate = packed >> 44
    samples = packed & ((1 << 36) - 1)
    if samples == 0 or not 1_000 <= rate <= 655_350:
        return None
    return HeaderInfo("flac", "flac", samples / rate)
