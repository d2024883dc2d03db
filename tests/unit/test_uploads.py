"""Receiving a multipart upload as it streams in: to disk, bounded, and cleaned up on error."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service.core.errors import BadRequest, PayloadTooLarge, ValidationFailed
from service.jobs import uploads
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


# --- malformed multipart is a bad request, never a parser exception ---------------------------


def raw_part(headers: bytes, data: bytes = b"") -> bytes:
    """One part in ``BOUNDARY``'s framing with ``headers`` exactly as given (CRLF-separated)."""
    return f"--{BOUNDARY}\r\n".encode() + headers + b"\r\n\r\n" + data + b"\r\n"


async def refused(
    raw: bytes, dest: Path, *, size: int = 7, content_type: str = CONTENT_TYPE
) -> str:
    """Receive ``raw`` in ``size``-byte chunks; assert a BadRequest and no file; its detail."""
    with pytest.raises(BadRequest) as caught:
        await receive_upload(Chunks(raw, size), content_type, dest=dest, max_bytes=1 << 20)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []
    return caught.value.detail


@pytest.mark.parametrize("size", [1, 7, 1 << 20])
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("名前".encode(), "name must be printable ASCII"),
        ("ħ".encode(), "name must be printable ASCII"),
        ("naïve".encode(), "name must be printable ASCII"),
        (b"tab\there", "name must be printable ASCII"),
        (b"\xff\xfe", "'content-disposition' is not UTF-8"),
    ],
    ids=["cjk", "above-latin-1", "latin-1-as-utf-8", "control", "not-utf-8"],
)
async def test_a_part_name_that_is_not_ascii_is_a_bad_request(
    tmp_path: Path, size: int, name: bytes, message: str
) -> None:
    # given the audio, then a field whose name is not printable ASCII (once a 500 from
    # python-multipart's Latin-1 encode)
    raw = body(
        file_part(b"RIFFdata" * 100),
        raw_part(b'Content-Disposition: form-data; name="' + name + b'"', b"x"),
    )

    # when it is received
    # then it is a bad request naming the rule, and the audio written so far is removed
    assert message in await refused(raw, tmp_path / "upload.audio", size=size)


@pytest.mark.parametrize(
    "header",
    [
        b'Content-Disposition: form-data; name="file"; filename="\xff\xfe.wav"',
        b'Content-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/\xe9",
    ],
    ids=["filename", "content-type"],
)
async def test_a_part_header_that_is_not_utf8_is_a_bad_request(
    tmp_path: Path, header: bytes
) -> None:
    # given a file part with a header whose bytes are not UTF-8
    raw = body(raw_part(header, b"RIFFdata"))

    # when it is received
    # then it is a bad request and nothing is left on disk
    assert "not UTF-8" in await refused(raw, tmp_path / "upload.audio")


@pytest.mark.parametrize("filename", ["会議 2024.wav", "Zürich.wav", 'say "hi".wav'])
async def test_a_utf8_filename_is_kept_as_sent(tmp_path: Path, filename: str) -> None:
    # given a real client's upload whose filename is outside ASCII (or Latin-1)
    request = httpx.Request(
        "POST", "http://steno/v1/jobs", files={"file": (filename, b"RIFFdata", "audio/wav")}
    )
    dest = tmp_path / "upload.audio"

    # when it is received
    upload = await receive_upload(
        Chunks(request.read(), 5), request.headers["content-type"], dest=dest, max_bytes=4096
    )

    # then the filename is the client's, character for character (httpx escapes '"' as %22)
    assert upload.filename == filename.replace('"', "%22")
    assert dest.read_bytes() == b"RIFFdata"


@pytest.mark.parametrize("size", [1, 64, 1 << 20])
async def test_more_than_sixteen_parts_is_a_bad_request(tmp_path: Path, size: int) -> None:
    # given the audio followed by sixteen small fields: seventeen parts
    fields = [field(f"f{i}", "x") for i in range(16)]
    raw = body(file_part(b"RIFFdata" * 100), *fields)

    # when it is received
    # then it is a bad request, and the audio already written is removed
    assert "more than 16 parts" in await refused(raw, tmp_path / "upload.audio", size=size)


async def test_sixteen_parts_are_accepted(tmp_path: Path) -> None:
    # given the audio and fifteen fields: exactly the limit
    raw = body(file_part(b"RIFFdata"), *[field(f"f{i}", "x") for i in range(15)])
    dest = tmp_path / "upload.audio"

    # when it is received
    upload = await receive_upload(Chunks(raw, 64), CONTENT_TYPE, dest=dest, max_bytes=4096)

    # then every field is there
    assert len(upload.fields) == 15
    assert dest.read_bytes() == b"RIFFdata"


@pytest.mark.parametrize("size", [1, 100, 1 << 20])
async def test_a_header_line_over_8_kib_is_a_bad_request(tmp_path: Path, size: int) -> None:
    # given a file part whose filename makes its Content-Disposition line longer than 8 KiB
    raw = body(file_part(b"RIFFdata", filename="a" * 8200 + ".wav"))

    # when it is received
    # then it is a bad request
    assert "header size" in await refused(raw, tmp_path / "upload.audio", size=size)


async def test_a_long_filename_under_the_line_limit_is_accepted(tmp_path: Path) -> None:
    # given a filename of 8,000 bytes: the line stays under 8 KiB
    dest = tmp_path / "upload.audio"
    raw = body(file_part(b"RIFFdata", filename="a" * 7996 + ".wav"))

    # when it is received
    upload = await receive_upload(Chunks(raw, 100), CONTENT_TYPE, dest=dest, max_bytes=4096)

    # then the filename is kept
    assert upload.filename == "a" * 7996 + ".wav"


@pytest.mark.parametrize("size", [1, 100, 1 << 20])
async def test_part_headers_over_16_kib_in_all_are_a_bad_request(tmp_path: Path, size: int) -> None:
    # given a part with three headers of 6 KiB each: each line fits, their sum does not
    padding = b"".join(b"\r\nX-Pad-%d: " % i + b"p" * 6000 for i in range(3))
    raw = body(raw_part(b'Content-Disposition: form-data; name="file"' + padding, b"RIFF"))

    # when it is received
    # then it is a bad request naming the limit
    assert "16384 bytes" in await refused(raw, tmp_path / "upload.audio", size=size)


@pytest.mark.parametrize("size", [1, 1 << 20])
async def test_more_than_eight_headers_in_a_part_is_a_bad_request(
    tmp_path: Path, size: int
) -> None:
    # given the audio, then a field with nine headers
    extra = b"".join(b"\r\nX-Extra-%d: x" % i for i in range(8))
    raw = body(
        file_part(b"RIFFdata"),
        raw_part(b'Content-Disposition: form-data; name="model"' + extra, b"tiny.en"),
    )

    # when it is received
    # then it is a bad request, and the audio is removed
    assert "header count" in await refused(raw, tmp_path / "upload.audio", size=size)


async def test_a_repeated_part_header_is_a_bad_request(tmp_path: Path) -> None:
    # given a part with two Content-Disposition headers that disagree on its name
    raw = body(
        raw_part(
            b'Content-Disposition: form-data; name="model"\r\n'
            b'Content-Disposition: form-data; name="file"',
            b"RIFF",
        )
    )

    # when it is received
    # then it is a bad request rather than either reading
    assert "repeats" in await refused(raw, tmp_path / "upload.audio")


COMPLETE = body(field("language", "en"), file_part(b"RIFF" + b"\x00\r\n-" * 200))


@pytest.mark.parametrize(
    "cut",
    [
        0,
        COMPLETE.index(b"Content-Disposition") + 10,
        COMPLETE.index(b"RIFF") - 2,
        COMPLETE.index(b"RIFF") + 300,
        len(COMPLETE) - len(f"--{BOUNDARY}--\r\n") + 3,
        len(COMPLETE) - 4,
    ],
    ids=["empty", "in-headers", "before-data", "in-data", "in-final-boundary", "before-dashes"],
)
@pytest.mark.parametrize("size", [1, 64, 1 << 20])
async def test_a_body_cut_short_is_a_bad_request(tmp_path: Path, cut: int, size: int) -> None:
    # given a valid body that stops before its closing boundary
    raw = COMPLETE[:cut]

    # when it is received
    # then it is a bad request (not a short audio file), and nothing is left on disk
    assert "ended before" in await refused(raw, tmp_path / "upload.audio", size=size)


async def test_the_body_up_to_its_closing_boundary_is_complete(tmp_path: Path) -> None:
    # given the same body with an epilogue after the closing boundary (RFC 2046 allows it)
    dest = tmp_path / "upload.audio"

    # when it is received
    upload = await receive_upload(
        Chunks(COMPLETE + b"epilogue", 64), CONTENT_TYPE, dest=dest, max_bytes=4096
    )

    # then the audio and the field are kept
    assert upload.size == 4 + 4 * 200
    assert upload.fields == {"language": "en"}


@pytest.mark.parametrize(
    ("content_type", "message"),
    [
        ("multipart/form-data; boundary=" + "b" * 71, "longer than 70"),
        ('multipart/form-data; boundary="ends-in-space "', "RFC 2046"),
        ("multipart/form-data; boundary=semi\x01colon", "RFC 2046"),
        ('multipart/form-data; boundary="a\\"b"', "RFC 2046"),
        ("multipart/form-data; boundary=\u0127\u0127", "could not be parsed"),
    ],
    ids=["too-long", "trailing-space", "control", "quote", "above-latin-1"],
)
async def test_a_boundary_rfc_2046_does_not_allow_is_a_bad_request(
    tmp_path: Path, content_type: str, message: str
) -> None:
    # given a multipart content type whose boundary no conforming client would send
    dest = tmp_path / "upload.audio"
    chunks = Chunks(body(file_part(b"RIFF")), 16)

    # when it is received
    # then it is refused before any of the body is read
    with pytest.raises(BadRequest, match=message):
        await receive_upload(chunks, content_type, dest=dest, max_bytes=4096)
    assert chunks.pulled == 0
    assert not dest.exists()


async def test_a_boundary_of_70_characters_is_accepted(tmp_path: Path) -> None:
    # given the longest boundary RFC 2046 allows, with its punctuation
    boundary = "'()+_,-./:=? " * 5 + "x" * 5
    raw = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"\r\n\r\nRIFF\r\n'
        f"--{boundary}--\r\n"
    ).encode()
    dest = tmp_path / "upload.audio"

    # when it is received
    await receive_upload(
        Chunks(raw, 9), f'multipart/form-data; boundary="{boundary}"', dest=dest, max_bytes=64
    )

    # then the audio is there
    assert len(boundary) == 70
    assert dest.read_bytes() == b"RIFF"


@pytest.mark.parametrize(
    "disposition",
    [
        b"Content-Disposition: attachment; name=file",
        b"Content-Disposition: form-data",
        b"Content-Disposition: form-data; filename=a.wav",
        b"Content-Disposition:",
    ],
    ids=["attachment", "no-name", "filename-only", "empty"],
)
async def test_a_bad_content_disposition_is_a_bad_request(
    tmp_path: Path, disposition: bytes
) -> None:
    # given the audio, then a part whose Content-Disposition names no form field
    raw = body(file_part(b"RIFFdata"), raw_part(disposition, b"x"))

    # when it is received
    # then it is a bad request and the audio is removed
    assert "Content-Disposition" in await refused(raw, tmp_path / "upload.audio")


async def test_an_unexpected_parser_error_is_a_bad_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a parser that fails in an unforeseen way once the audio has started
    class Failing(uploads.MultipartParser):
        def write(self, data: bytes) -> int:
            if b"later" in data:
                raise IndexError("parser bug")
            return super().write(data)

    monkeypatch.setattr(uploads, "MultipartParser", Failing)
    raw = file_part(b"RIFFdata") + b"later" + f"--{BOUNDARY}--\r\n".encode()

    # when a body is received
    # then the client gets a bad request without the parser's internals, and no file stays
    with pytest.raises(BadRequest) as caught:
        await receive_upload(
            Chunks(raw, raw.index(b"later")), CONTENT_TYPE, dest=tmp_path / "a", max_bytes=64
        )
    assert caught.value.detail == "the multipart body could not be parsed"
    assert list(tmp_path.iterdir()) == []


async def test_a_failure_writing_the_audio_is_not_blamed_on_the_client(tmp_path: Path) -> None:
    # given a destination that can't be written (its folder does not exist)
    dest = tmp_path / "missing" / "upload.audio"

    # when a valid body is received
    # then the OS error goes on as it is (a 500), not as a bad request
    with pytest.raises(FileNotFoundError):
        await receive_upload(
            Chunks(body(file_part(b"RIFF")), 8), CONTENT_TYPE, dest=dest, max_bytes=64
        )
