"""Read CTranslate2's ``model.bin`` format (binary version 6) into numpy arrays."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from workers.gpu.weights.errors import WeightsError

__all__ = ["CTranslate2Model", "read_ctranslate2"]


_BFLOAT16 = 5
_DTYPES: dict[int, np.dtype[Any]] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    # numpy has no bfloat16; it is read as raw uint16 and widened to float32 below.
    _BFLOAT16: np.dtype("<u2"),
}
_SUPPORTED_BINARY_VERSIONS = frozenset({6})


@dataclass(frozen=True)
class CTranslate2Model:
    """A parsed CTranslate2 ``model.bin``: spec name, spec revision, variables and aliases."""

    spec: str
    revision: int
    variables: dict[str, npt.NDArray[Any]] = field(repr=False)
    aliases: dict[str, str]


class _Reader:
    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def exact(self, size: int) -> bytes:
        data = self._stream.read(size)
        if len(data) != size:
            raise WeightsError(f"truncated model.bin: wanted {size} bytes, got {len(data)}")
        return data

    def u8(self) -> int:
        return int(self.exact(1)[0])

    def u16(self) -> int:
        return int(struct.unpack("<H", self.exact(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.exact(4))[0])

    def string(self) -> str:
        length = self.u16()
        raw = self.exact(length)
        if length == 0 or raw[-1] != 0:
            raise WeightsError("malformed string in model.bin (missing NUL terminator)")
        return raw[:-1].decode("utf-8")

    def array(self, dtype: np.dtype[Any], shape: tuple[int, ...], nbytes: int) -> npt.NDArray[Any]:
        # readinto a fresh array keeps it aligned and writable without holding a second copy
        # of the whole file in memory (torch warns on read-only numpy buffers).
        out = np.empty(shape, dtype=dtype)
        view = out.data.cast("B")
        got = self._stream.readinto(view) if nbytes else 0  # type: ignore[attr-defined]
        if got != nbytes:
            raise WeightsError(f"truncated model.bin: wanted {nbytes} bytes, got {got}")
        return out


def read_ctranslate2(source: Path | str | bytes | BinaryIO) -> CTranslate2Model:
    """Parse a CTranslate2 ``model.bin`` (binary version 6).

    Accepts a path, the file's bytes, or a binary stream. Every variable comes back as a numpy
    array of its stored shape (rank-0 variables as 0-d arrays) and dtype, except bfloat16 which is
    widened to float32. Raises ``WeightsError`` on an unsupported version, unknown dtype, size
    mismatch, truncation or trailing garbage.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return _read_stream(io.BytesIO(source))
    if isinstance(source, str | Path):
        with open(source, "rb") as stream:
            return _read_stream(stream)
    return _read_stream(source)


def _read_stream(stream: BinaryIO) -> CTranslate2Model:
    reader = _Reader(stream)
    version = reader.u32()
    if version not in _SUPPORTED_BINARY_VERSIONS:
        raise WeightsError(f"unsupported CTranslate2 binary version {version} (expected 6)")
    spec = reader.string()
    revision = reader.u32()
    variables: dict[str, npt.NDArray[Any]] = {}
    for _ in range(reader.u32()):
        name = reader.string()
        rank = reader.u8()
        shape = tuple(reader.u32() for _ in range(rank))
        code = reader.u8()
        nbytes = reader.u32()
        dtype = _DTYPES.get(code)
        if dtype is None:
            raise WeightsError(f"variable {name!r} has unknown dtype code {code}")
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if expected != nbytes:
            raise WeightsError(
                f"variable {name!r}: shape {shape} x {dtype} needs {expected} bytes, "
                f"file says {nbytes}"
            )
        array = reader.array(dtype, shape, nbytes)
        if code == _BFLOAT16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        variables[name] = array
    aliases: dict[str, str] = {}
    for _ in range(reader.u32()):
        alias = reader.string()
        aliases[alias] = reader.string()
    if stream.read(1):
        raise WeightsError("trailing bytes after the alias table in model.bin")
    return CTranslate2Model(spec=spec, revision=revision, variables=variables, aliases=aliases)
