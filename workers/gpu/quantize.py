"""Whisper's audio encoder with int8 MLP layers on the CPU (``STENO_WHISPER_CPU_INT8``).

PyTorch's dynamic quantization stores each linear layer's weights as int8 and quantizes its
input per call with one scale for the whole tensor. For a batch of windows that scale would
depend on the other jobs' audio, so a job's transcript would change with its batch-mates;
each window therefore goes through the quantized layer on its own (``PerWindow``).

Only the encoder's MLPs are quantized: they are two thirds of its linear work, and with the
attention projections float32 the word error rate stayed that of float32 (29 espeak-ng
clips: 0.095 vs 0.110), where quantizing the projections too raised it (0.125) for the same
speed. The text decoder stays float32 (its per-token inputs are too small to gain, and it
is what batches across jobs). A job's transcript is thus the same with batching on or off.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch

__all__ = ["PerWindow", "quantize_encoder_int8"]

log = logging.getLogger(__name__)


class PerWindow(torch.nn.Module):
    """A layer applied to each window of a batch ``[windows, frames, features]`` apart."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's output for ``x``, each window quantized with its own scale."""
        if x.dim() == 3 and x.shape[0] > 1:
            return torch.cat([self.layer(window) for window in x.split(1)])
        result: torch.Tensor = self.layer(x)
        return result


def quantize_encoder_int8(model: Any) -> None:
    """Quantize the MLP layers of ``model.encoder``'s blocks to int8 in place, each window
    on its own.

    whisper's own ``Linear`` only casts its weight to the input's dtype, which on a float32
    CPU model is plain ``nn.Linear``; it is retyped so that PyTorch's quantizer swaps it. The
    convolutions, attention projections and attention products stay float32. On a torch
    without eager dynamic quantization (PyTorch is moving it to torchao) the model is left
    float32, with a warning.
    """
    from whisper.model import Linear as WhisperLinear

    try:
        from torch.ao.nn.quantized.dynamic import Linear as QuantizedLinear
        from torch.ao.quantization import quantize_dynamic
    except ImportError:
        log.warning("this torch has no dynamic quantization: Whisper's encoder stays float32")
        return

    with warnings.catch_warnings():
        # torch.ao's eager quantization announces its move to torchao; it still works.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\.")
        for block in model.encoder.blocks:
            mlp = block.mlp
            for module in mlp.modules():
                if type(module) is WhisperLinear:
                    module.__class__ = torch.nn.Linear
            quantize_dynamic(mlp, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
            for name, child in list(mlp.named_children()):
                if isinstance(child, QuantizedLinear):
                    setattr(mlp, name, PerWindow(child))
