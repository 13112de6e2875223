"""Train a new adapter on top of a frozen one (`lora.stack_on`), so that fusing the two is exact.

Two adapters trained apart on the same base interfere when they are fused: each delta was
learned without the other, and their sum moves each task away from what its adapter
learned (measured on the demo: the fused adapter kept 0 % of the instrucciones gain). A
stacked adapter is trained with the earlier adapter's delta already in the model, frozen;
the fused pair (`python -m training fuse A B`, exact `cat`) then computes exactly the model
the new adapter was trained in. The new adapter alone still works on its own task; rows of
the earlier task mixed in with `dataset.replay` keep the pair good at that task too.

The frozen adapter is not a second PEFT adapter: PEFT with two active adapters saves both in
every checkpoint and the trainer's resume re-activates only one of them. Here its delta
`scale * B @ A x` is added by a forward hook on each adapted base layer (the module PEFT
then wraps), outside the state dict, checkpoints and optimizer; no dropout, as a frozen
adapter runs at inference. Only adapters that fuse exactly are taken (training/adapters/fusable.py:
open_fusable, through the door of training/adapters/folder.py; plain LoRA on Linear layers,
safetensors unless pickle is explicitly allowed).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from training.adapters.factors import PEFT_PREFIX, module_scale
from training.adapters.folder import check_tensors_land
from training.adapters.fusable import open_fusable
from training.files import sha256_file


class FrozenLoraDelta:
    """Forward hook adding `B @ A x` (scale folded into B) to a layer's output, without gradients to A, B."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        self.a, self.b = a, b

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        delta = (x.to(self.a.dtype) @ self.a.T) @ self.b.T
        return output + delta.to(output.dtype)


def stack_frozen_adapter(model: nn.Module, adapter_dir: str | Path, allow_pickle: bool = False) -> dict:
    """Add the adapter in `adapter_dir` to `model` (a base model, before PEFT wraps it), frozen.

    Returns the training record's `stacked_on` entry. Raises ValueError naming the module
    when the adapter does not fit this base model.
    """
    adapter_dir = Path(adapter_dir)
    where = f"lora.stack_on: {adapter_dir}"
    if not adapter_dir.is_dir():
        raise ValueError(f"{where}: no such adapter folder; train that adapter first (its recipe's output_dir)")
    source = open_fusable(adapter_dir, allow_pickle)
    tensors = [key for factors in source.modules.values() for key in (factors.a_key, factors.b_key)]
    check_tensors_land(f"{where}: {source.weights_file.name}", tensors, model)
    hooks = []
    for key, factors in source.modules.items():
        name = key.removeprefix(PEFT_PREFIX)
        layer = _linear_layer(model, name, factors, where)
        scale = module_scale(source.config, key, factors.a.shape[0], where)
        device = _device_of(layer)
        a = factors.a.detach().to(device, torch.float32)
        b = (factors.b.detach().float() * scale).to(device)
        hooks.append(layer.register_forward_hook(FrozenLoraDelta(a, b)))
    return {
        "path": str(adapter_dir),
        "name": source.record.name or adapter_dir.name,
        "task": source.record.task,
        "weights_sha256": sha256_file(source.weights_file),
        "modules": len(hooks),
    }


def _linear_layer(model: nn.Module, name: str, factors, where: str) -> nn.Module:
    layer = model.get_submodule(name)  # there: check_tensors_land
    in_features, out_features = getattr(layer, "in_features", None), getattr(layer, "out_features", None)
    if in_features is None or factors.a.ndim != 2 or "embedding" in factors.a_key:
        raise ValueError(f"{where}: {name!r} is not a Linear layer; only LoRA on Linear layers can be stacked on")
    if (factors.a.shape[1], factors.b.shape[0]) != (in_features, out_features):
        raise ValueError(
            f"{where}: {name!r} is {in_features} -> {out_features} in this base model but "
            f"{factors.a.shape[1]} -> {factors.b.shape[0]} in the adapter; it was trained on another base model"
        )
    return layer


def _device_of(layer: nn.Module) -> torch.device:
    for tensor in (*layer.parameters(), *layer.buffers()):
        return tensor.device
    return torch.device("cpu")
