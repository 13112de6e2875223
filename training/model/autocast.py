"""4-bit base layers under autocast: inputs and outputs in the autocast dtype, as nn.Linear's.

Under autocast an nn.Linear casts its input to the autocast dtype and returns its output in that
dtype. bitsandbytes' Linear4bit also multiplies in its compute dtype, but casts the output back
to its input's dtype: float32 in a k-bit model, whose residual stream is float32 after the k-bit
preparation. Every adapted layer's output then stays float32 through the LoRA sum, the MLP's
activation and product, and whatever backward saves of them: in the bench's QLoRA run
(bench/train_throughput.py) float32 copies of the MLP's 1024-wide tensors were the largest
share of the saved activations.

`autocast_4bit_layers(model)` makes each Linear4bit without a bias take its input in the autocast dtype when
autocast runs with that dtype as the layer's compute dtype; the cast is the one the layer made
itself, so its product is unchanged and its output stays in bf16/fp16, as a 16-bit model's
nn.Linear's would. What changes is rounding after the product: the LoRA sum, SiLU and the gate
product run in bf16 instead of float32, as they do when the base is loaded in 16 bits. The
residual stream, the norms and the loss stay float32. Outside autocast (evaluation, inference,
merging) nothing changes. Measured on the bench's QLoRA run: saved activations of the longest
step 483 -> 384 MB, peak RSS -190 MB, held-out answer loss 7.8235 -> 7.8231, the same time.
tests/test_model.py checks the dtypes and that loss and LoRA gradients stay within bf16 rounding.
"""

from __future__ import annotations

import bitsandbytes as bnb
import torch


def autocast_4bit_layers(model) -> int:
    """Register the input cast on every Linear4bit of `model`; returns the layers changed."""
    changed = 0
    for module in model.modules():
        # A bias is left alone: bitsandbytes casts a bias's storage to the input's dtype, for good.
        if (isinstance(module, bnb.nn.Linear4bit) and module.bias is None
                and not getattr(module, "_spanish_ft_autocast", False)):
            module.register_forward_pre_hook(_input_in_autocast_dtype)
            module._spanish_ft_autocast = True
            changed += 1
    return changed


def _input_in_autocast_dtype(module, args):
    x = args[0]
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return None
    dtype = torch.get_autocast_dtype(device)
    if x.dtype == dtype or module.compute_dtype != dtype:
        return None
    return (x.to(dtype), *args[1:])
