"""Load openai-whisper models and run transcriptions; the GPU worker's only contact with whisper.

Kept free of Celery so that it can be used (and tested) from plain Python. Results are the
shared transcript types of ``service.core.transcript``, ready to store as they are.
"""

from __future__ import annotations

import contextvars
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from service.core.transcript import Transcript, TranscriptSegment, TranscriptWord
from workers.gpu.decode import load_audio
from workers.gpu.mel import install_log_mel
from workers.gpu.padding import trim_encoder_padding
from workers.gpu.quantize import quantize_encoder_int8

if TYPE_CHECKING:
    import whisper.model

__all__ = [
    "ModelNotInstalled",
    "choose_device",
    "load_model",
    "transcribe",
]

SAMPLE_RATE = 16_000
# whisper.transcribe's own default: decode at 0, and hotter when a window fails its checks.
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class ModelNotInstalled(Exception):
    """The model is neither a checkpoint file, nor installed in the model dir, nor downloadable."""


def choose_device(preference: str = "auto", *, slot: int = 0) -> str:
    """Return the torch device string to run on.

    ``"auto"`` means ``"cuda"`` when torch sees a CUDA device and ``"cpu"`` otherwise.
    ``"cuda"`` pins device ``slot`` modulo the device count (``cuda:0`` for slot 0 or when
    none is visible), so the worker's children spread over the host's GPUs. ``"cpu"`` and
    ``"cuda:N"`` are returned as given (a CUDA preference is not silently downgraded: loading
    fails loudly if there is no GPU). Anything else raises ValueError.
    """
    pref = preference.strip().lower()
    if pref == "auto":
        pref = "cuda" if torch.cuda.is_available() else "cpu"
    if pref == "cuda":
        # One worker child per GPU: child ``slot`` pins device ``slot`` (modulo the count).
        return f"cuda:{slot % max(1, torch.cuda.device_count())}"
    if pref == "cpu" or (pref.startswith("cuda:") and pref[5:].isdigit()):
        return pref
    raise ValueError(f"unknown device {preference!r}: use auto, cpu, cuda or cuda:N")


def load_model(
    name_or_path: str,
    model_dir: Path,
    device: str,
    *,
    cpu_int8: bool = False,
    trim_padding: bool = False,
) -> whisper.model.Whisper:
    """Load a Whisper model onto ``device``, warmed up and in eval mode.

    With ``cpu_int8`` and a CPU device, the audio encoder's MLP layers run int8, each
    window on its own (``workers.gpu.quantize``). With ``trim_padding``, the encoder skips
    most of a short window's zero padding (``workers.gpu.padding``).

    Resolution order: ``name_or_path`` as an existing checkpoint file; then
    ``model_dir / f"{name}.pt"`` (what ``steno models install`` writes); then openai-whisper's own
    download into ``model_dir``. Checkpoints are loaded with ``strict=True`` and their
    ``alignment_heads`` (when present) are installed for word timestamps. Raises
    ``ModelNotInstalled`` when none of these works, naming the install command.
    """
    import whisper as openai_whisper

    path = Path(name_or_path)
    installed = model_dir / f"{name_or_path}.pt"
    if path.is_file():
        model = _load_checkpoint(path, device)
    elif installed.is_file():
        model = _load_checkpoint(installed, device)
    else:
        try:
            model = openai_whisper.load_model(
                name_or_path, device=device, download_root=str(model_dir)
            )
        except Exception as exc:
            raise ModelNotInstalled(
                f"Whisper model {name_or_path!r} is not installed in {model_dir} and could not be "
                f"downloaded ({type(exc).__name__}: {exc}). "
                f"Run `steno models install {name_or_path}` on this host."
            ) from exc
    model.eval()
    if cpu_int8 and model.device.type == "cpu":
        quantize_encoder_int8(model)
    if trim_padding:
        trim_encoder_padding(model)
    _warm_up(model)
    return model


def _load_checkpoint(path: Path, device: str) -> whisper.model.Whisper:
    from whisper.model import ModelDimensions, Whisper

    # Loaded on the CPU first: the model is built in float32 there and moved once, so the GPU
    # never holds the checkpoint and the model at the same time.
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = Whisper(ModelDimensions(**ckpt["dims"]))
    model.load_state_dict(ckpt["model_state_dict"], strict=True)
    heads = ckpt.get("alignment_heads")
    if heads:
        dims = model.dims
        mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
        for layer, head in heads:
            mask[int(layer), int(head)] = True
        # Same layout as Whisper.set_alignment_heads: a non-persistent sparse bool buffer.
        model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)
    return model.to(device)


def _warm_up(model: whisper.model.Whisper) -> None:
    import whisper as openai_whisper
    from whisper.timing import dtw
    from whisper.tokenizer import get_tokenizer

    # whisper.tokenizer.get_encoding reads its vocabulary through an open() it never closes. The
    # result is cached per process, so loading it here, once, under a filter for exactly that
    # ResourceWarning keeps it out of job logs (and out of test runs where warnings are errors).
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"unclosed file .*\.tiktoken", category=ResourceWarning
        )
        # Through get_tokenizer, because its lru_cache key depends on how get_encoding is called.
        get_tokenizer(model.is_multilingual, num_languages=model.num_languages)

    # One short decode of silence pays for lazy kernel selection / allocator growth here rather
    # than in the first job; a few tokens exercise both encoder and decoder.
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    mel = openai_whisper.log_mel_spectrogram(
        openai_whisper.pad_or_trim(silence), n_mels=model.dims.n_mels
    ).to(model.device)
    options = openai_whisper.DecodingOptions(
        language="en",
        without_timestamps=True,
        sample_len=4,
        fp16=model.device.type == "cuda",
    )
    with torch.inference_mode():
        openai_whisper.decode(model, mel, options)
    # Word timestamps align with a JIT-compiled DTW (numba on the CPU, Triton on CUDA) whose
    # first call compiles for over a second; compile it now on the device jobs will use.
    dtw(torch.zeros(2, 2, device=model.device))


# ---------------------------------------------------------------------------------------------
# Per-segment callback
# ---------------------------------------------------------------------------------------------
# openai-whisper's transcribe() has no per-segment hook, but it calls its progress bar's update()
# right after appending each window's finished segments to its local `all_segments`. A progress
# bar class that looks at that list lets callers see segments as they are decoded instead of only
# at the end. The active callback lives in a ContextVar so concurrent transcriptions in other
# threads are unaffected; if the tap ever finds no `all_segments` (a different whisper release),
# transcribe() still delivers every segment after decoding finishes.

_segment_tap: contextvars.ContextVar[Callable[[list[dict[str, Any]]], None] | None] = (
    contextvars.ContextVar("steno_segment_tap", default=None)
)
_tap_installed = False


def _install_segment_tap() -> None:
    global _tap_installed
    if _tap_installed:
        return
    import importlib
    import inspect

    import tqdm

    # `import whisper.transcribe` would yield the function: whisper/__init__ re-exports
    # transcribe under the submodule's name.
    whisper_transcribe: Any = importlib.import_module("whisper.transcribe")

    transcribe_code = whisper_transcribe.transcribe.__code__

    class _TappedTqdm(tqdm.tqdm):  # type: ignore[misc,type-arg,unused-ignore]
        def update(self, n: float | None = 1) -> bool | None:
            tap = _segment_tap.get()
            frame = inspect.currentframe()
            caller = frame.f_back if frame is not None else None
            if tap is not None and caller is not None and caller.f_code is transcribe_code:
                segments = caller.f_locals.get("all_segments")
                if isinstance(segments, list):
                    tap(segments)
            del frame, caller
            result: bool | None = super().update(n)
            return result

    # A namespace standing in for the tqdm module inside whisper.transcribe only; the real tqdm
    # module is left untouched for everyone else.
    whisper_transcribe.tqdm = types.SimpleNamespace(tqdm=_TappedTqdm)
    _tap_installed = True


def _to_segment(raw: dict[str, Any], *, with_words: bool) -> TranscriptSegment:
    # whisper sets "words" to [] on blanked segments even without word timestamps; callers get
    # None whenever they did not ask for words.
    words = (
        None
        if not with_words
        else [
            TranscriptWord(
                word=str(w["word"]),
                start=float(w["start"]),
                end=float(w["end"]),
                probability=float(w["probability"]),
            )
            for w in raw.get("words", [])
        ]
    )
    return TranscriptSegment(
        id=int(raw["id"]),
        start=float(raw["start"]),
        end=float(raw["end"]),
        text=str(raw["text"]).strip(),
        words=words,
        avg_logprob=float(raw["avg_logprob"]),
        no_speech_prob=float(raw["no_speech_prob"]),
        temperature=float(raw["temperature"]),
        compression_ratio=float(raw["compression_ratio"]),
        tokens=[int(t) for t in raw["tokens"]],
    )


def transcribe(
    model: whisper.model.Whisper,
    audio_path: Path,
    *,
    language: str | None,
    word_timestamps: bool,
    initial_prompt: str | None,
    fp16: bool,
    on_segment: Callable[[TranscriptSegment], None] | None = None,
    task: str = "transcribe",
    temperature: float | None = None,
) -> Transcript:
    """Transcribe one audio file with ``whisper.transcribe`` into a frozen ``Transcript``.

    The file is decoded by ffmpeg to 16 kHz mono; ``duration`` is its length in seconds.
    ``language=None`` lets a multilingual model detect the language; an English-only (``.en``)
    model always reports and decodes ``"en"``. ``fp16`` is honoured only when the model is on a
    CUDA device (whisper would fall back with a warning on the CPU anyway). Nothing is printed.
    Texts are stripped (a word keeps whisper's leading space); every statistic of a segment is
    set, and its ``words`` is None unless ``word_timestamps`` was asked for.
    ``on_segment``, when given, is called exactly once per segment, in order, as soon as the
    30-second window containing it is decoded (at the latest before this function returns);
    an exception from it aborts the transcription.
    ``task`` is ``transcribe`` or ``translate`` (into English; an English-only model only
    transcribes, which for its English audio is the same text). ``temperature`` None or 0
    keeps Whisper's fallback schedule (0.0, 0.2, ... 1.0: a window that fails the
    compression or log-probability checks is decoded again hotter); above 0, that one
    temperature is used for every window.
    """
    import whisper as openai_whisper

    install_log_mel()  # the same spectrogram, without the STFT of 30 s of padding
    audio = load_audio(audio_path)
    duration = len(audio) / SAMPLE_RATE
    if not model.is_multilingual:
        language = "en"
        task = "transcribe"
    use_fp16 = fp16 and model.device.type == "cuda"

    delivered = 0

    def deliver(raw_segments: list[dict[str, Any]]) -> None:
        nonlocal delivered
        if on_segment is None:
            return
        while delivered < len(raw_segments):
            segment = _to_segment(raw_segments[delivered], with_words=word_timestamps)
            delivered += 1
            on_segment(segment)

    token = None
    if on_segment is not None:
        _install_segment_tap()
        token = _segment_tap.set(deliver)
    try:
        result = openai_whisper.transcribe(
            model,
            audio,
            verbose=None,
            language=language,
            word_timestamps=word_timestamps,
            initial_prompt=initial_prompt,
            fp16=use_fp16,
            task=task,
            temperature=(temperature,) if temperature else FALLBACK_TEMPERATURES,
        )
    finally:
        if token is not None:
            _segment_tap.reset(token)
    raw_segments: list[dict[str, Any]] = result["segments"]
    deliver(raw_segments)
    return Transcript(
        text=str(result["text"]).strip(),
        language=str(result["language"]),
        duration=duration,
        segments=[_to_segment(s, with_words=word_timestamps) for s in raw_segments],
    )
