"""Diarization accuracy on espeak-ng dialogues of known turns, with the real offline models."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.dialogue import dialogue, labelled_share
from workers.gpu.diarize.models import DiarizationModels, load_models
from workers.gpu.diarize.turns import SpeakerCount, embed_voice, find_turns

MIN_CORRECT = 0.90


@pytest.fixture(scope="module")
def models() -> DiarizationModels:
    return load_models("cpu")


@pytest.mark.parametrize(
    ("order", "count"),
    [
        ((0, 1, 0, 1, 0, 1, 0, 1), SpeakerCount()),
        ((0, 1, 2, 0, 2, 1, 0, 1), SpeakerCount()),
        ((0, 1, 2, 0, 2, 1, 0, 1), SpeakerCount(exact=3)),
        ((1, 0, 1, 1, 0, 1), SpeakerCount(minimum=2, maximum=4)),
    ],
    ids=["two-voices", "three-voices", "three-voices-given", "two-voices-bounded"],
)
def test_each_voice_keeps_one_label(
    models: DiarizationModels, order: tuple[int, ...], count: SpeakerCount
) -> None:
    # Given a dialogue of distinct voices with known turn boundaries
    audio, truth = dialogue(order)
    # when it is diarized
    began = time.perf_counter()
    turns = find_turns(models, audio, count)
    seconds = time.perf_counter() - began
    # then the speaker count is right and >= 90 % of speech time carries its voice's label
    share, mapping = labelled_share(truth, [(t.start, t.end, t.speaker) for t in turns])
    minutes = len(audio) / 16_000 / 60
    print(f"{order}: {share:.1%} correct, {seconds / minutes:.1f} s per audio minute")
    assert len({t.speaker for t in turns}) == len(set(order)), turns
    assert share >= MIN_CORRECT, (share, mapping, turns)


def test_a_known_voice_print_names_its_speaker(models: DiarizationModels) -> None:
    # Given voice prints enrolled from other sentences of voice 1 and voice 2
    enrol, _ = dialogue((1,))
    other, _ = dialogue((2,))
    prints = {
        "alice": np.array(embed_voice(models, enrol), dtype=np.float32),
        "carol": np.array(embed_voice(models, other), dtype=np.float32),
    }
    # when a dialogue of voices 0 and 1 is diarized with them
    audio, truth = dialogue((0, 1, 0, 1, 0, 1))
    turns = find_turns(models, audio, SpeakerCount(), known=prints)
    # then voice 1 is "alice", voice 0 stays anonymous, and "carol" (absent) is not used
    share, mapping = labelled_share(truth, [(t.start, t.end, t.speaker) for t in turns])
    assert mapping[1] == "alice" and mapping[0].startswith("#"), mapping
    assert share >= MIN_CORRECT
