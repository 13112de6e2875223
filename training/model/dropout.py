"""LoRA dropout without the copies: one mask per input, the input left in its compute dtype.

PEFT's LoRA layer computes `lora_B(lora_A(dropout(x.to(lora_A.dtype))))` in every adapted layer.
Under bf16 autocast (GPUs, and CPUs with native bf16) that costs, per adapted layer, an fp32 copy
of a bf16 input, its own dropout mask and output, and autocast's bf16 copy of that for lora_A's
matmul; q, k and v read the same input and make three of each, as do gate and up.
`share_lora_dropout(model)` changes two things, both only while training:
- under autocast the input keeps its dtype: lora_A's matmul runs in bf16 either way, so the fp32
  round trip only rounded the dropout's scaling once more (PEFT's `cast_input_dtype_enabled`);
  without autocast PEFT casts as before;
- layers that read the same tensor share one dropout draw (SharedDropout): q, k and v get the
  same mask, as do gate and up; under autocast a float32 input's draw (a k-bit model's residual
  stream) is cast once to the autocast dtype, the cast each layer's lora_A matmul made on its own
  (the same values, one saved copy instead of three).
Each layer still sees `Dropout(p)` of its input, the distribution PEFT's own dropout gives it;
the draws of sibling layers become one. Nothing of this reaches the saved adapter: its weights,
config (`lora_dropout` stays p) and PEFT's loading and inference (dropout is the identity in
eval mode) are unchanged (tests/test_model.py checks the forward against PEFT's with the same
mask, and the adapter files).
"""

from __future__ import annotations

import weakref

import torch
from peft.tuners.lora import LoraLayer
from torch import nn


class CastUnlessAutocast:
    """PEFT's `cast_input_dtype_enabled` flag, true unless autocast runs: the adapter's matmuls then take
    any input dtype, while outside autocast (evaluation, inference) PEFT casts the input as usual."""

    def __bool__(self) -> bool:
        return not any(torch.is_autocast_enabled(device) for device in ("cpu", "cuda"))


class LastDraw:
    """The last dropout draw: its input (weakly), p, the input's version, and the output."""

    def __init__(self) -> None:
        self.source, self.p, self.version, self.output = None, None, None, None

    def matches(self, x: torch.Tensor, p: float, dtype: torch.dtype) -> bool:
        return (self.source is not None and self.source() is x and self.p == p and self.version == x._version
                and self.output.dtype == dtype)

    def remember(self, x: torch.Tensor, p: float, output: torch.Tensor) -> None:
        self.source, self.p, self.version, self.output = weakref.ref(x), p, x._version, output


class SharedDropout(nn.Module):
    """nn.Dropout(p) that reuses the previous draw when called again on the very same input tensor."""

    def __init__(self, p: float, last: LastDraw) -> None:
        super().__init__()
        self.p, self.last = p, last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        device = x.device.type
        # under autocast lora_A's matmul would cast a float32 draw, once per layer: cast once for all readers
        cast = x.dtype == torch.float32 and torch.is_autocast_enabled(device)
        dtype = torch.get_autocast_dtype(device) if cast else x.dtype
        if self.last.matches(x, self.p, dtype):
            return self.last.output
        output = nn.functional.dropout(x, self.p, training=True) if self.p else x
        output = output.to(dtype)
        if output is not x:
            self.last.remember(x, self.p, output)
        return output

    def extra_repr(self) -> str:
        return f"p={self.p}, shared with layers reading the same input"


def share_lora_dropout(model) -> int:
    """Give every LoRA layer of `model` a SharedDropout and keep its input dtype; returns the layers changed."""
    last, changed = LastDraw(), 0
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        for name, dropout in module.lora_dropout.items():
            if isinstance(dropout, nn.Dropout):
                module.lora_dropout[name] = SharedDropout(dropout.p, last)
        module.cast_input_dtype_enabled = CastUnlessAutocast()
        changed += 1
    return changed
