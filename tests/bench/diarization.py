"""What diarization costs a job and how well it labels: espeak-ng dialogues of known turns.

Four dialogues (two of 2 voices, two of 3, about 2 min of audio in all; sentences of their
own, not the test suite's) are synthesised with ``tests.dialogue``'s voices. For each, warm
models in process (a short dialogue first pays the first job's warm-up), medians over up to
``REPEATS`` passes (no pass starts after ``BUDGET_SECONDS`` per device, at least one runs):

- Whisper tiny.en alone, the GPU worker's call (``workers.gpu.whisper.transcribe``), once
  without word timestamps (a plain job) and once with them (what a diarized job decodes);
- the diarization step itself: ``workers.gpu.diarization.diarize_transcript``, the function a
  job calls after Whisper (decode, VAD, embeddings, clustering, assignment to words and
  segments), with a stand-in runtime whose events and writes go nowhere.

Scores: the speaker count found against the true one, and the share of true speech time whose
turn label is its voice's (found labels mapped to voices one to one, maximising overlap: the
accuracy test's idea), and the same share over the transcript's words. Runs on ``cpu``, then
on ``cuda`` when torch sees a GPU.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from service.core import speakers, transitions
from service.core.settings import Settings, load_settings
from service.core.transcript import Transcript
from tests.audio import word_error_rate
from tests.dialogue import GAP_SECONDS, RATE, voice_clip, write_wav
from workers.gpu.runtime import GpuRuntime

MODEL = "tiny.en"
REPEATS = 3
BUDGET_SECONDS = 75.0

# Distinct plain sentences (none of tests.audio.SENTENCES); a dialogue never repeats one,
# since repetition trips Whisper's compression check and its random temperature fallback.
LINES = (
    "Could you send me the slides before lunch tomorrow?",
    "Sure, I will finish the last chart tonight.",
    "The client asked for a shorter version of the proposal.",
    "Then we should cut the history section and keep the numbers.",
    "I booked the large room on the second floor for Thursday.",
    "Good, the projector in the small room is broken again.",
    "Who is going to write the summary for the board?",
    "I can do it if somebody checks my spelling afterwards.",
    "The train was late, so I missed the first half of the talk.",
    "You did not miss much, they were still setting up the sound.",
    "Our budget for travel is almost gone this quarter.",
    "Let us hold the next workshop online instead.",
    "The new printer needs a different kind of paper.",
    "I ordered two boxes this morning, they arrive on Monday.",
    "Please lock the back door when you leave tonight.",
    "The garden behind the office looks lovely in spring.",
)

# name -> turns, each (voice, number of sentences): the voices of tests.dialogue.VOICES.
DIALOGUES: dict[str, tuple[tuple[int, int], ...]] = {
    "two-voices-short-turns": ((0, 1), (1, 1), (0, 1), (1, 1), (0, 1), (1, 1), (0, 1), (1, 1)),
    "two-voices-long-turns": ((1, 2), (0, 3), (1, 1), (0, 2)),
    "three-voices": ((0, 1), (1, 1), (2, 1), (0, 1), (2, 1), (1, 1), (0, 1), (2, 1)),
    "three-voices-uneven": ((2, 2), (0, 1), (1, 3), (2, 1), (0, 2)),
}


@dataclass(frozen=True)
class Dialogue:
    """A synthesised dialogue: its WAV file, spoken text and true (start, end, voice) turns."""

    name: str
    path: Path
    text: str
    truth: list[tuple[float, float, int]]
    seconds: float


def run() -> dict[str, Any]:
    """Synthesise the dialogues; time and score them on the CPU, then on CUDA if present."""
    import torch

    figures: dict[str, Any] = {"model": MODEL, "dialogues": {}}
    with tempfile.TemporaryDirectory(prefix="steno-bench-diar-") as tmp:
        dialogues = [
            synthesise(name, turns, Path(tmp), first=4 * number)
            for number, (name, turns) in enumerate(DIALOGUES.items())
        ]
        for d in dialogues:
            figures["dialogues"][d.name] = {
                "voices": len({voice for _, _, voice in d.truth}),
                "turns": len(d.truth),
                "audio_seconds": round(d.seconds, 1),
            }
        figures["audio_minutes"] = round(sum(d.seconds for d in dialogues) / 60, 2)
        warm_up = synthesise("warm-up", ((0, 1), (1, 1)), Path(tmp), first=9)
        figures["cpu"] = measure("cpu", dialogues, warm_up)
        figures["gpu"] = (
            measure("cuda:0", dialogues, warm_up)
            if torch.cuda.is_available()
            else "not available on this machine"
        )
    return figures


def synthesise(
    name: str, turns: Sequence[tuple[int, int]], folder: Path, first: int = 0
) -> Dialogue:
    """``turns`` read by their voices from consecutive ``LINES`` from ``first`` on (never one
    twice), 0.4 s apart, as a WAV."""
    pieces: list[npt.NDArray[np.float32]] = []
    truth: list[tuple[float, float, int]] = []
    said: list[str] = []
    at = 0.0
    for voice, sentences in turns:
        lines = [LINES[(first + len(said) + k) % len(LINES)] for k in range(sentences)]
        said += lines
        text = " ".join(lines)
        clip = voice_clip(text, voice)
        truth.append((at, at + len(clip) / RATE, voice))
        pieces += [clip, np.zeros(int(GAP_SECONDS * RATE), dtype=np.float32)]
        at += len(clip) / RATE + GAP_SECONDS
    audio = np.concatenate(pieces)
    path = write_wav(audio, folder / f"{name}.wav")
    return Dialogue(name, path, " ".join(said), truth, len(audio) / RATE)


class _BenchRuntime:
    """What ``diarize_transcript`` uses of a ``GpuRuntime``: its device and settings (no fault
    hooks set); events go nowhere.

    A job names no known speakers here, so its one database read (``known_speakers`` of an
    empty list) answers the empty list without a database.
    """

    def __init__(self, device: str, settings: Settings) -> None:
        self.device = device
        self.settings = settings

    def emit(self, event: object) -> None:
        pass

    def write(self, operation: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if operation is speakers.known_speakers and not args[0]:
            return []
        raise AssertionError(f"unexpected write {operation.__name__} in the benchmark")


@contextlib.contextmanager
def _recording_turns() -> Iterator[list[Any]]:
    """Keep the turns ``find_turns`` returns (diarize_transcript imports it at each call)."""
    from workers.gpu.diarize import turns as turns_module

    original = turns_module.find_turns
    found: list[Any] = []

    def find_turns(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        found[:] = result
        return result

    turns_module.find_turns = find_turns
    try:
        yield found
    finally:
        turns_module.find_turns = original


def measure(device: str, dialogues: Sequence[Dialogue], warm_up: Dialogue) -> dict[str, Any]:
    """Load times, then per dialogue and overall: s/audio-min, ratios, counts, label shares."""
    from workers.gpu.diarization import diarization_models, diarize_transcript
    from workers.gpu.whisper import load_model, transcribe

    settings = load_settings()
    began = time.perf_counter()
    model = load_model(MODEL, settings.models_dir, device)
    whisper_load = time.perf_counter() - began
    began = time.perf_counter()
    diarization_models(device)
    diarization_load = time.perf_counter() - began
    runtime = cast(GpuRuntime, _BenchRuntime(device, settings))
    fp16 = device.startswith("cuda")

    def whisper(path: Path, words: bool) -> tuple[Transcript, float]:
        began = time.perf_counter()
        transcript = transcribe(
            model,
            path,
            language="en",
            word_timestamps=words,
            initial_prompt=None,
            fp16=fp16,
            on_segment=lambda _segment: None,
        )
        return transcript, time.perf_counter() - began

    def diarize(d: Dialogue, transcript: Transcript) -> tuple[Transcript, list[Any], float]:
        claim = transitions.Claim(
            job_id=uuid.uuid4(),
            token=1,
            audio_path=str(d.path),
            audio_seconds=d.seconds,
            model=MODEL,
            language="en",
            word_timestamps=True,  # words kept, to score them; dropping them costs nothing
            initial_prompt=None,
            diarization={},  # diarize=true, the speaker count chosen automatically
        )
        with _recording_turns() as found:
            began = time.perf_counter()
            labelled = diarize_transcript(runtime, claim, transcript, lambda _s, _p: None)
            seconds = time.perf_counter() - began
        return labelled, list(found), seconds

    # The first diarization pays for lazy kernel setup, as a child's first job would.
    began = time.perf_counter()
    diarize(warm_up, whisper(warm_up.path, True)[0])
    warm_up_seconds = time.perf_counter() - began

    timings: dict[str, dict[str, list[float]]] = {
        d.name: {"plain": [], "words": [], "diarize": []} for d in dialogues
    }
    last: dict[str, tuple[Transcript, list[Any]]] = {}
    began = time.perf_counter()
    passes = 0
    while passes < REPEATS and (passes == 0 or time.perf_counter() - began < BUDGET_SECONDS):
        passes += 1
        for d in dialogues:
            _, seconds = whisper(d.path, False)
            timings[d.name]["plain"].append(seconds)
            transcript, seconds = whisper(d.path, True)
            timings[d.name]["words"].append(seconds)
            labelled, turns, seconds = diarize(d, transcript)
            timings[d.name]["diarize"].append(seconds)
            last[d.name] = (labelled, turns)

    rows: dict[str, Any] = {}
    totals = {"plain": 0.0, "words": 0.0, "diarize": 0.0}
    right_time = speech_time = 0.0
    right_words = word_count = 0
    counts_right = 0
    for d in dialogues:
        labelled, turns = last[d.name]
        minutes = d.seconds / 60
        median = {key: statistics.median(values) for key, values in timings[d.name].items()}
        for key, value in median.items():
            totals[key] += value
        share, mapping = time_share(d.truth, [(t.start, t.end, t.speaker) for t in turns])
        word_share, words_scored = word_share_of(d.truth, labelled)
        voices = len({voice for _, _, voice in d.truth})
        found = len({t.speaker for t in turns})
        in_transcript = len({s.speaker for s in labelled.segments if s.speaker})
        counts_right += found == voices
        speech = sum(end - start for start, end, _ in d.truth)
        right_time += share * speech
        speech_time += speech
        right_words += round(word_share * words_scored)
        word_count += words_scored
        rows[d.name] = _rates(median, minutes) | {
            "speakers_true": voices,
            "speakers_found": found,
            "speakers_in_transcript": in_transcript,
            "speech_time_right_label": round(share, 3),
            "words_right_label": round(word_share, 3),
            "label_of_voice": {str(v): label for v, label in sorted(mapping.items())},
            "word_error_rate": round(word_error_rate(d.text, labelled.text), 3),
        }
    minutes = sum(d.seconds for d in dialogues) / 60
    overall = _rates(totals, minutes) | {
        "speaker_count_right": f"{counts_right}/{len(dialogues)}",
        "speech_time_right_label": round(right_time / speech_time, 3),
        "words_right_label": round(right_words / max(1, word_count), 3),
    }
    return {
        "device": device,
        "load_seconds": {
            "whisper_tiny_en": round(whisper_load, 2),
            "diarization_models": round(diarization_load, 2),
            "first_job_warm_up": round(warm_up_seconds, 2),
        },
        "passes": passes,
        "per_dialogue": rows,
        "overall": overall,
    }


def _rates(seconds: dict[str, float], minutes: float) -> dict[str, float]:
    plain, words, diarize = seconds["plain"], seconds["words"], seconds["diarize"]
    return {
        "transcribe_plain_s_per_audio_min": round(plain / minutes, 2),
        "transcribe_words_s_per_audio_min": round(words / minutes, 2),
        "transcribe_and_diarize_s_per_audio_min": round((words + diarize) / minutes, 2),
        "diarize_s_per_audio_min": round(diarize / minutes, 2),
        "ratio_with_to_without_diarization": round((words + diarize) / words, 2),
        "ratio_diarized_job_to_plain_job": round((words + diarize) / plain, 2),
    }


def _assign(matrix: npt.NDArray[np.float64]) -> tuple[float, dict[int, int]]:
    """The one-to-one voice -> label mapping with the most overlap, and that overlap."""
    if matrix.size == 0:
        return 0.0, {}
    rows, cols = linear_sum_assignment(matrix, maximize=True)
    return float(matrix[rows, cols].sum()), dict(zip(rows.tolist(), cols.tolist(), strict=True))


def time_share(
    truth: Sequence[tuple[float, float, int]], spans: Sequence[tuple[float, float, str]]
) -> tuple[float, dict[int, str]]:
    """Share of true speech time under its voice's label, labels mapped one to one to voices
    for the most overlap (extra labels or voices stay unmatched); and that mapping."""
    voices = sorted({voice for _, _, voice in truth})
    labels = sorted({label for _, _, label in spans})
    matrix = np.zeros((len(voices), len(labels)))
    for start, end, voice in truth:
        for a, b, label in spans:
            matrix[voices.index(voice), labels.index(label)] += max(
                0.0, min(end, b) - max(start, a)
            )
    right, pairs = _assign(matrix)
    total = sum(end - start for start, end, _ in truth)
    return right / total, {voices[v]: labels[label] for v, label in pairs.items()}


def word_share_of(
    truth: Sequence[tuple[float, float, int]], transcript: Transcript
) -> tuple[float, int]:
    """Share of the transcript's words whose speaker is their voice's (mapped as above), and
    how many words there were; a word's voice is the true turn it overlaps most."""
    words = [w for s in transcript.segments for w in s.words or ()]
    voices = sorted({voice for _, _, voice in truth})
    labels = sorted({w.speaker or "" for w in words})
    matrix = np.zeros((len(voices), len(labels)))
    for w in words:

        def overlap(turn: tuple[float, float, int], w: Any = w) -> float:
            start, end, _ = turn
            shared = min(end, w.end) - max(start, w.start)
            return float(shared if shared > 0 else -min(abs(w.start - end), abs(start - w.end)))

        voice = max(truth, key=overlap)[2]
        matrix[voices.index(voice), labels.index(w.speaker or "")] += 1
    right, _ = _assign(matrix)
    return right / max(1, len(words)), len(words)
