"""Receiving a multipart upload as it streams in: to disk, bounded, and cleaned up on error."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service.core.errors import BadRequest, PayloadTooLarge, ValidationFailed
from service.jobs.uploads import receive_upload

BOUNDARY = "steno-test-boundary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
CHUNK_SIZES = [1, 7, 64, 1024, 1 << 20]


class Chunks:
    """An async iterator over ``body`` in ``size``-byte chunks that counts what was pulled."""

    def __init__(self, body: bytes, size: int) -> None:
        self.chunks = [body[i : i + size] for i in range(0, len(body), size)]
        self.pulled = 0

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        if self.pulled == len(self.chunks):
            raise StopAsyncIteration
        self.pulled += 1
        return self.chunks[self.pulled - 1]

    @property
    def exhausted(self) -> bool:
        return self.pulled == len(self.chunks)


def field(name: str, value: str) -> bytes:
    """One plain form field, in ``BOUNDARY``'s framing."""
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    ).encode()


def file_part(data: bytes, *, name: str = "file", filename: str = "speech.wav") -> bytes:
    """One file part, in ``BOUNDARY``'s framing."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"'
        "\r\nContent-Type: audio/wav\r\n\r\n"
    ).encode()
    return head + data + b"\r\n"


def body(*parts: bytes) -> bytes:
    """Parts closed by the final boundary."""
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize("size", CHUNK_SIZES)
async def test_fields_and_file_from_a_real_client_are_received(tmp_path: Path, size: int) -> None:
    # given a body encoded by httpx, with binary audio holding CR/LF and dashes
    audio = os.urandom(5000) + b"\r\n--" + BOUNDARY.encode() + b"x" + os.urandom(3000)
    request = httpx.Request(
        "POST",
        "http://steno/v1/jobs",
        data={"language": "en", "initial_prompt": "Zürich, naïve café"},
        files={"file": ("talk.ogg", audio, "audio/ogg")},
    )
    dest = tmp_path / "upload.audio"

    # when it streams in, chunk by chunk
    upload = await receive_upload(
        Chunks(request.read(), size),
        request.headers["content-type"],
        dest=dest,
        max_bytes=len(audio),
    )

    # then the audio is on disk byte for byte and the fields are kept
    assert dest.read_bytes() == audio
    assert upload.path == dest
    assert upload.size == len(audio)
    assert upload.filename == "talk.ogg"
    assert upload.content_type == "audio/ogg"
    assert upload.fields == {"language": "en", "initial_prompt": "Zürich, naïve café"}


@pytest.mark.parametrize("size", CHUNK_SIZES)
async def test_a_file_of_exactly_the_limit_is_accepted(tmp_path: Path, size: int) -> None:
    # given a file exactly max_bytes long
    audio = os.urandom(4096)
    dest = tmp_path / "upload.audio"

    # when it is received
    upload = await receive_upload(
        Chunks(body(file_part(audio)), size), CONTENT_TYPE, dest=dest, max_bytes=4096
    )

    # then all of it is kept
    assert upload.size == 4096
    assert dest.read_bytes() == audio


@pytest.mark.parametrize("size", [1, 7, 64, 1024])
async def test_one_byte_over_the_limit_is_refused_and_removed(tmp_path: Path, size: int) -> None:
    # given a file one byte over max_bytes, followed by another field
    dest = tmp_path / "upload.audio"
    chunks = Chunks(body(file_part(os.urandom(4097)), field("initial_prompt", "x" * 8000)), size)

    # when it is received
    # then it is refused, the rest of the body is not read, and nothing stays on disk
    with pytest.raises(PayloadTooLarge, match="4096"):
        await receive_upload(chunks, CONTENT_TYPE, dest=dest, max_bytes=4096)
    assert not chunks.exhausted
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("size", [1, 512, 64 * 1024])
async def test_an_oversized_upload_is_refused_without_reading_the_rest(
    tmp_path: Path, size: int
) -> None:
    # given a 1 MiB file against a 4 KiB limit
    dest = tmp_path / "upload.audio"
    chunks = Chunks(body(field("model", "tiny.en"), file_part(b"\0" * (1 << 20))), size)

    # when it streams in
    with pytest.raises(PayloadTooLarge):
        await receive_upload(chunks, CONTENT_TYPE, dest=dest, max_bytes=4096)

    # then reading stopped soon after the limit: most of the body was never pulled
    assert not chunks.exhausted
    assert chunks.pulled * size <= 4096 + 64 * 1024 + 512
    assert not dest.exists()


@pytest.mark.parametrize("size", [1, 1024])
async def test_a_body_without_a_file_part_is_a_validation_error(tmp_path: Path, size: int) -> None:
    # given only plain fields
    dest = tmp_path / "upload.audio"
    chunks = Chunks(body(field("language", "en"), field("model", "tiny.en")), size)

    # when it is received
    # then it is refused for lacking the audio
    with pytest.raises(ValidationFailed, match="'file'"):
        await receive_upload(chunks, CONTENT_TYPE, dest=dest, max_bytes=4096)
    assert not dest.exists()


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",
        "multipart/form-data; charset=utf-8",
        'multipart/form-data; boundary=""',
    ],
)
async def test_a_content_type_without_a_boundary_is_a_bad_request(
    tmp_path: Path, content_type: str
) -> None:
    # given a multipart content type that does not say where parts end
    dest = tmp_path / "upload.audio"
    chunks = Chunks(body(file_part(b"RIFF")), 16)

    # when it is received
    # then it is refused before any of the body is read
    with pytest.raises(BadRequest, match="boundary"):
        await receive_upload(chunks, content_type, dest=dest, max_bytes=4096)
    assert chunks.pulled == 0
    assert not dest.exists()


@pytest.mark.parametrize("size", [1, 1024])
async def test_two_file_parts_are_a_validation_error(tmp_path: Path, size: int) -> None:
    # given two parts named 'file'
    dest = tmp_path / "upload.audio"
    chunks = Chunks(body(file_part(b"first" * 100), file_part(b"second" * 100)), size)

    # when it is received
    # then it is refused, and the first file does not stay on disk
    with pytest.raises(ValidationFailed, match="exactly one"):
        await receive_upload(chunks, CONTENT_TYPE, dest=dest, max_bytes=4096)
    assert not dest.exists()


@pytest.mark.parametrize(
    "raw",
    [
        b"this is not multipart at all",
        f"--{BOUNDARY}\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--{BOUNDARY}--\r\n".encode(),
    ],
    ids=["garbage", "part-without-disposition"],
)
async def test_a_malformed_body_is_a_bad_request(tmp_path: Path, raw: bytes) -> None:
    # given a body that is not valid multipart for its boundary
    dest = tmp_path / "upload.audio"

    # when it is received
    # then it is a bad request and nothing is left on disk
    with pytest.raises(BadRequest):
        await receive_upload(Chunks(raw, 8), CONTENT_TYPE, dest=dest, max_bytes=4096)
    assert not dest.exists()


async def test_a_file_part_without_a_filename_is_still_the_audio(tmp_path: Path) -> None:
    # given a 'file' part sent like a plain field (no filename)
    dest = tmp_path / "upload.audio"
    raw = body(field("file", "RIFFdata"))

    # when it is received
    upload = await receive_upload(Chunks(raw, 3), CONTENT_TYPE, dest=dest, max_bytes=4096)

    # then its bytes are the audio, not a field
    assert dest.read_bytes() == b"RIFFdata"
    assert upload.filename is None
    assert "file" not in upload.fields


async def test_a_nul_in_a_part_header_is_a_bad_request(tmp_path: Path) -> None:
    # given a file part whose filename carries a NUL byte
    dest = tmp_path / "upload.audio"
    raw = body(file_part(b"RIFFdata", filename="a\x00.wav"))

    # when it is received
    # then it is a bad request (the name could not be stored) and nothing is left on disk
    with pytest.raises(BadRequest, match="NUL"):
        await receive_upload(Chunks(raw, 5), CONTENT_TYPE, dest=dest, max_bytes=4096)
    assert not dest.exists()
