"""Convert a parsed CTranslate2 WhisperSpec into openai-whisper's checkpoint layout."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

from workers.gpu.weights.ctranslate2 import CTranslate2Model
from workers.gpu.weights.errors import WeightsError

__all__ = ["to_whisper_checkpoint"]


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
    import torch  # deferred: importing the package (and its format reader) needs no torch

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
