"""One forward pass for windows whose decoding options differ only in their prompt.

openai-whisper's ``transcribe`` prompts each window with the text decoded before it (up to
the last 223 tokens), so two jobs' windows past the first almost never share
``DecodingOptions``, and ``whisper.decode`` takes one set per call. The prompt only fills
the tokens in front of the start-of-transcript token; every logit filter and the ranking
look at the tokens after it. So windows whose options differ only in the prompt, and whose
prompts take the same number of tokens, decode in one batch with each row given its own
prompt. Past its first minute or two of speech every window of a long file has a full
223-token prompt, so long files batch window after window.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from whisper.decoding import DecodingOptions, DecodingResult, DecodingTask

__all__ = ["PromptedTask", "batch_key", "decode_batch", "initial_tokens"]


def initial_tokens(model: Any, options: DecodingOptions) -> tuple[int, ...]:
    """The tokens in front of the first one decoded for a window with ``options``: its
    prompt's, then the start-of-transcript sequence."""
    return tuple(DecodingTask(model, options).initial_tokens)


def batch_key(options: DecodingOptions, initial: tuple[int, ...]) -> tuple[str, int]:
    """Windows with equal keys may share a batch: their options but the prompt, and the
    number of their ``initial`` tokens."""
    return repr(dataclasses.replace(options, prompt=None)), len(initial)


class PromptedTask(DecodingTask):  # type: ignore[misc]
    """A ``DecodingTask`` over a batch whose row *i* starts with ``rows[i]`` (its
    ``initial_tokens``); the options are the first row's, and every row must give the same
    ``batch_key``."""

    def __init__(self, model: Any, options: DecodingOptions, rows: list[tuple[int, ...]]) -> None:
        super().__init__(model, options)
        if any(len(row) != self.sample_begin for row in rows):
            raise ValueError("the prompts of one batch must take the same number of tokens")
        self._prompts = torch.tensor([row[: self.sot_index] for row in rows], dtype=torch.long)

    def _main_loop(self, audio_features: torch.Tensor, tokens: torch.Tensor) -> Any:
        # Each row's own prompt in front of the shared start-of-transcript sequence (which
        # carries any language the task detected).
        if self.sot_index:
            tokens = tokens.clone()
            rows = self._prompts.repeat_interleave(self.n_group, dim=0)
            tokens[:, : self.sot_index] = rows.to(tokens.device)
        return super()._main_loop(audio_features, tokens)


def decode_batch(
    model: Any, mel: torch.Tensor, options: DecodingOptions, rows: list[tuple[int, ...]]
) -> list[DecodingResult]:
    """``whisper.decode`` of the windows ``mel`` ([batch, n_mels, frames]) with ``options``,
    window *i* prompted as its ``initial_tokens`` ``rows[i]`` say (one ``batch_key`` for all)."""
    results: list[DecodingResult] = PromptedTask(model, options, rows).run(mel)
    return results
