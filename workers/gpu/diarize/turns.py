"""Who spoke when: speech regions from the VAD, a voice embedding per window, clustered into turns.

Pure numpy/scipy over the models' outputs (``DiarizationModels``); no Celery, no database.
The speaker count is ``num_speakers`` when given, otherwise the agglomerative clustering's
cut at ``DISTANCE_THRESHOLD`` kept within ``min_speakers``..``max_speakers``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from workers.gpu.diarize.models import SAMPLE_RATE, DiarizationModels

__all__ = [
    "DISTANCE_THRESHOLD",
    "KNOWN_SIMILARITY",
    "SpeakerCount",
    "Turn",
    "find_turns",
    "speech_regions",
]

# Average-linkage cosine distance at which two groups of windows count as different voices.
DISTANCE_THRESHOLD = 0.3
# Cosine similarity a cluster's mean voice needs with a stored voice print to take its name.
KNOWN_SIMILARITY = 0.75
WINDOW_SECONDS = 1.6
HOP_SECONDS = 0.8
_VAD_FRAME = 512 / SAMPLE_RATE
_MIN_SPEECH = 0.25
_MIN_SILENCE = 0.2
_MIN_WINDOW = 0.4
_BATCH = 32


@dataclass(frozen=True, slots=True)
class SpeakerCount:
    """The speaker count a client asked for: exact, or bounds for the automatic choice."""

    exact: int | None = None
    minimum: int = 1
    maximum: int = 10


@dataclass(frozen=True, slots=True)
class Turn:
    """A stretch of speech by one speaker: ``speaker`` is a cluster number or a known name."""

    start: float
    end: float
    speaker: str


def speech_regions(probabilities: npt.NDArray[np.float32]) -> list[tuple[float, float]]:
    """(start, end) seconds of speech from per-window VAD probabilities (hysteresis 0.5/0.35)."""
    regions: list[tuple[float, float]] = []
    start: float | None = None
    for index, probability in enumerate(probabilities):
        at = index * _VAD_FRAME
        if start is None and probability >= 0.5:
            start = at
        elif start is not None and probability < 0.35:
            regions.append((start, at))
            start = None
    if start is not None:
        regions.append((start, len(probabilities) * _VAD_FRAME))
    merged: list[tuple[float, float]] = []
    for begin, end in regions:
        if merged and begin - merged[-1][1] < _MIN_SILENCE:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((begin, end))
    return [(begin, end) for begin, end in merged if end - begin >= _MIN_SPEECH]


def find_turns(
    models: DiarizationModels,
    audio: npt.NDArray[np.float32],
    count: SpeakerCount,
    *,
    known: Mapping[str, npt.NDArray[np.float32]] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> list[Turn]:
    """The speaker turns of 16 kHz ``audio``, in time order; adjacent turns of one voice merge.

    Speakers are named ``"#0"``, ``"#1"``, ... by cluster, or by the name of a ``known`` voice
    print whose similarity with the cluster's mean voice reaches ``KNOWN_SIMILARITY``.
    ``on_progress`` receives the fraction done (0..1) now and then.
    """
    progress = on_progress or (lambda _fraction: None)
    regions = speech_regions(models.speech_probabilities(audio))
    progress(0.3)
    spans = _windows(regions)
    if not spans:
        return []
    vectors = _embed(models, audio, spans, lambda done: progress(0.3 + 0.6 * done))
    labels = _cluster(vectors, count)
    labels = _smooth(labels, spans)
    names = _names(vectors, labels, known or {})
    progress(1.0)
    return _turns(spans, labels, names)


def embed_voice(models: DiarizationModels, audio: npt.NDArray[np.float32]) -> list[float]:
    """One voice print for a clip of one speaker: the mean of its windows' embeddings."""
    spans = _windows(speech_regions(models.speech_probabilities(audio)))
    if not spans:
        raise ValueError("no speech found in the clip")
    vectors = _embed(models, audio, spans, lambda _done: None)
    mean = vectors.mean(axis=0)
    return [float(x) for x in mean / max(float(np.linalg.norm(mean)), 1e-9)]


@dataclass(frozen=True, slots=True)
class _Span:
    region: int
    start: float
    end: float
    # The part of the region this window speaks for (around its centre).
    own_start: float
    own_end: float


def _windows(regions: list[tuple[float, float]]) -> list[_Span]:
    spans: list[_Span] = []
    for number, (begin, end) in enumerate(regions):
        if end - begin <= WINDOW_SECONDS:
            if end - begin >= _MIN_WINDOW:
                spans.append(_Span(number, begin, end, begin, end))
            continue
        starts = list(np.arange(begin, end - WINDOW_SECONDS, HOP_SECONDS))
        starts.append(end - WINDOW_SECONDS)
        centres = [s + WINDOW_SECONDS / 2 for s in starts]
        for i, s in enumerate(starts):
            own_start = begin if i == 0 else (centres[i - 1] + centres[i]) / 2
            own_end = end if i == len(starts) - 1 else (centres[i] + centres[i + 1]) / 2
            spans.append(_Span(number, float(s), float(s) + WINDOW_SECONDS, own_start, own_end))
    return spans


def _embed(
    models: DiarizationModels,
    audio: npt.NDArray[np.float32],
    spans: list[_Span],
    progress: Callable[[float], None],
) -> npt.NDArray[np.float32]:
    vectors = np.zeros((len(spans), 256), dtype=np.float32)
    by_length: dict[int, list[int]] = {}
    for index, span in enumerate(spans):
        length = round((span.end - span.start) * SAMPLE_RATE)
        by_length.setdefault(length, []).append(index)
    done = 0
    for length, indices in by_length.items():
        for first in range(0, len(indices), _BATCH):
            batch = indices[first : first + _BATCH]
            clips = [_clip(audio, spans[i].start, length) for i in batch]
            vectors[batch] = models.embed(clips)
            done += len(batch)
            progress(done / len(spans))
    return vectors


def _clip(audio: npt.NDArray[np.float32], start: float, length: int) -> npt.NDArray[np.float32]:
    first = round(start * SAMPLE_RATE)
    clip = audio[first : first + length]
    if len(clip) < length:
        clip = np.pad(clip, (0, length - len(clip)))
    return np.ascontiguousarray(clip, dtype=np.float32)


def _cluster(vectors: npt.NDArray[np.float32], count: SpeakerCount) -> list[int]:
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(vectors) == 1:
        return [0]
    tree = linkage(vectors.astype(np.float64), method="average", metric="cosine")
    if count.exact is not None:
        labels = fcluster(tree, t=min(count.exact, len(vectors)), criterion="maxclust")
    else:
        labels = fcluster(tree, t=DISTANCE_THRESHOLD, criterion="distance")
        found = len(set(labels))
        bounded = min(max(found, count.minimum), count.maximum, len(vectors))
        if bounded != found:
            labels = fcluster(tree, t=bounded, criterion="maxclust")
    return [int(label) - 1 for label in labels]


def _smooth(labels: list[int], spans: list[_Span]) -> list[int]:
    # One window whose two neighbours in the same region agree on another voice is noise.
    out = list(labels)
    for i in range(1, len(spans) - 1):
        same_region = spans[i - 1].region == spans[i].region == spans[i + 1].region
        if same_region and labels[i - 1] == labels[i + 1] != labels[i]:
            out[i] = labels[i - 1]
    return out


def _names(
    vectors: npt.NDArray[np.float32],
    labels: list[int],
    known: Mapping[str, npt.NDArray[np.float32]],
) -> dict[int, str]:
    names = {label: f"#{label}" for label in set(labels)}
    candidates: list[tuple[float, int, str]] = []
    for label in set(labels):
        mean = vectors[[i for i, x in enumerate(labels) if x == label]].mean(axis=0)
        mean = mean / max(float(np.linalg.norm(mean)), 1e-9)
        for name, print_ in known.items():
            similarity = float(np.dot(mean, print_) / max(float(np.linalg.norm(print_)), 1e-9))
            if similarity >= KNOWN_SIMILARITY:
                candidates.append((similarity, label, name))
    taken: set[str] = set()
    named: set[int] = set()
    for _similarity, label, name in sorted(candidates, reverse=True):
        if label not in named and name not in taken:
            names[label] = name
            named.add(label)
            taken.add(name)
    return names


def _turns(spans: list[_Span], labels: list[int], names: dict[int, str]) -> list[Turn]:
    turns: list[Turn] = []
    for span, label in zip(spans, labels, strict=True):
        speaker = names[label]
        if turns and turns[-1].speaker == speaker and span.own_start - turns[-1].end < 1.0:
            turns[-1] = Turn(turns[-1].start, span.own_end, speaker)
        else:
            turns.append(Turn(span.own_start, span.own_end, speaker))
    return turns
