"""Whisper's encoder without most of a short window's padding (``STENO_WHISPER_TRIM_PADDING``).

openai-whisper encodes every window as 30 s of log-mel frames: a 6 s clip is 80 % padding,
and on a CPU the encoder's cost grows with the frames it is given. openai-whisper's
``transcribe`` pads a window shorter than 30 s with exact zeros (``pad_or_trim``), so the
padding is the trailing run of all-zero frames. ``TrimmedEncoder`` encodes only the window's
content plus at least ``MARGIN_FRAMES`` of that padding, rounded up to a whole bucket of
``BUCKET_FRAMES``; the decoder then attends over that many audio positions instead of 1,500.
A full window (the middle of a long file) is encoded exactly as openai-whisper does.

Whisper was trained on 30 s windows only, so a shorter one changes what it hears; whether
that costs accuracy was measured on tiny.en (``just bench padding``): over 150 espeak-ng
clips of five voices and three rates (1-15 s), mean word error rate 0.244 with 30 s windows
and 0.209 with 15 s buckets, trimmed better on 52 clips and worse on 25; an earlier study of
96 clips of three voices saw 0.111 and 0.119 (the loss on clips under 5 s), and 0.127 with
10 s buckets. Hence on by default (``STENO_WHISPER_TRIM_PADDING=false`` turns it off), and
buckets of 15 s.

Why a margin: with none, tiny.en repeats sentences and runs past the end (word error rate
0.158 against 0.097 on the bench's 20 clips); with 2 s of padding kept it sees the speech
stop. Why buckets: a window's encoded length depends only on its own audio, so a job's
transcript is the same whichever jobs' windows share its batch (the batcher batches only
windows of one bucket), and windows of similar length still batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from whisper.model import AudioEncoder

__all__ = [
    "BUCKET_FRAMES",
    "MARGIN_FRAMES",
    "TrimmedEncoder",
    "encoded_frames",
    "trim_encoder_padding",
]

# Mel frames are 10 ms each: a window of 30 s is 3,000 frames.
BUCKET_FRAMES = 1500
MARGIN_FRAMES = 200


class TrimmedEncoder(AudioEncoder):  # type: ignore[misc]
    """Whisper's ``AudioEncoder`` that encodes a window's content, not its zero padding."""

    def frames(self, x: torch.Tensor) -> int:
        """The mel frames ``x`` (``[n_mels, frames]`` or a batch of them) is encoded with:
        its content and ``MARGIN_FRAMES`` of padding, rounded up to ``BUCKET_FRAMES``, at
        most the full window."""
        full = int(x.shape[-1])
        content = torch.nonzero((x != 0).flatten(0, -2).any(dim=0))
        end = int(content[-1]) + 1 if len(content) else 0
        buckets = -(-(end + MARGIN_FRAMES) // BUCKET_FRAMES)
        return min(full, buckets * BUCKET_FRAMES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``AudioEncoder.forward`` on the first ``frames(x)`` frames of ``x``."""
        frames = self.frames(x)
        if frames == x.shape[-1]:
            full: torch.Tensor = super().forward(x)
            return full
        x = F.gelu(self.conv1(x[..., :frames]))
        x = F.gelu(self.conv2(x))
        x = x.permute(0, 2, 1)
        x = (x + self.positional_embedding[: x.shape[1]]).to(x.dtype)
        for block in self.blocks:
            x = block(x)
        trimmed: torch.Tensor = self.ln_post(x)
        return trimmed


def trim_encoder_padding(model: Any) -> None:
    """Make ``model``'s audio encoder a ``TrimmedEncoder``, in place."""
    if type(model.encoder) is AudioEncoder:
        model.encoder.__class__ = TrimmedEncoder


def encoded_frames(model: Any, mel: torch.Tensor) -> int:
    """The mel frames ``model``'s encoder encodes window ``mel`` with."""
    encoder = model.encoder
    return encoder.frames(mel) if isinstance(encoder, TrimmedEncoder) else int(mel.shape[-1])
