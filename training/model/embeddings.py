"""The frozen input embedding and LM head of a 4/8-bit model: kept in 16-bit, or stored in NF4 on request.

PEFT's `prepare_model_for_kbit_training` upcasts every unquantised weight to float32, the
embedding and LM head included. For SmolLM2-135M (one tied 49152 x 576 matrix, a fifth of its
weights) that doubled what stays unquantised; on a 7B it is 0.25 GB per 32000 x 4096 matrix.
Frozen weights need no fp32 copy, so training/model/load.py keeps them in their 16-bit load dtype
and `compute_embeddings_in_float32` keeps the arithmetic as it was: the embedding's output is
cast to float32 (the residual stream's dtype after PEFT's upcast), and the LM head casts its
weight to the hidden states' dtype per call (outside autocast), so logits and loss equal those
of the upcast model. TRL's fused loss reads `lm_head.weight` itself and casts each vocabulary
chunk to the hidden states' dtype, which needs no help.

`quantization.embeddings: 4bit` (opt-in) stores the matrices in NF4 too: the input embedding
becomes a bitsandbytes `Embedding4bit` (it dequantises only the looked-up rows), and the LM head
an `NF4Head` that reads the same packed `Params4bit` when the model ties them, so the tie stays
exact and the matrix is stored once. Its cost in answer loss is printed by bench/memory.py.

    quantize_embeddings(model, "nf4")      # before prepare_for_kbit_training
    compute_embeddings_in_float32(model)   # called by training.model.prepare_for_kbit_training
"""

from __future__ import annotations

import functools
import types

import bitsandbytes as bnb
import torch
from bitsandbytes.functional import dequantize_4bit
from torch import nn
from torch.nn import functional as F

RESIDUAL_DTYPE = torch.float32  # the hidden states' dtype PEFT's upcast gave k-bit models; kept


def embedding_parameters(model) -> set[int]:
    """ids of the input embedding's and LM head's parameters (one set for a tied model)."""
    modules = [model.get_input_embeddings(), model.get_output_embeddings()]
    return {id(param) for module in modules if module is not None for param in module.parameters()}


def compute_embeddings_in_float32(model) -> None:
    """Float32 hidden states from the (16-bit or NF4) embedding; the LM head runs in their dtype."""
    model.get_input_embeddings().register_forward_hook(_cast_to_residual_dtype)
    head = model.get_output_embeddings()
    if head is not None and not isinstance(head, NF4Head):
        head.forward = types.MethodType(_linear_in_input_dtype, head)


def _cast_to_residual_dtype(module, args, output):
    return output.to(RESIDUAL_DTYPE)


def _linear_in_input_dtype(self, hidden: torch.Tensor) -> torch.Tensor:
    """nn.Linear.forward with the weight cast to the input's dtype (autocast casts both itself)."""
    weight, bias = self.weight, self.bias
    if not torch.is_autocast_enabled(hidden.device.type):
        weight = weight.to(hidden.dtype)
        bias = None if bias is None else bias.to(hidden.dtype)
    return F.linear(hidden, weight, bias)


@functools.cache
def _embedding_class():
    class NF4Embedding(bnb.nn.Embedding4bit):
        """bitsandbytes' Embedding4bit, which can be saved like a Linear4bit (PEFT reads the whole state dict)."""

        def _save_to_state_dict(self, destination, prefix, keep_vars):
            nn.Module._save_to_state_dict(self, destination, prefix, keep_vars)
            for key, value in self.weight.quant_state.as_dict(packed=True).items():
                destination[prefix + "weight." + key] = value if keep_vars else value.detach()

    return NF4Embedding


class NF4Head(nn.Module):
    """An LM head over an NF4 matrix, its own or (tied) the input embedding's `Params4bit`.

    `weight` reads as the dequantised matrix, because TRL's fused loss multiplies
    `lm_head.weight` itself, chunk by chunk: the dense copy lives only for that loss.
    """

    def __init__(self, packed, tied: bool):
        super().__init__()
        if tied:
            self._tied = (packed,)  # a tuple: not registered, so not stored or counted twice
        else:
            self.packed = packed
        self.bias = None

    @property
    def weight(self) -> torch.Tensor:
        packed = self._tied[0] if hasattr(self, "_tied") else self.packed
        return dequantize_4bit(packed.data, packed.quant_state)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return _linear_in_input_dtype(self, hidden)


def quantize_embeddings(model, quant_type: str) -> None:
    """Store the input embedding and LM head in 4-bit (`quant_type` nf4 or fp4), keeping a tie exact."""
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is embedding.weight
    vocab, width = embedding.weight.shape
    # No double quantisation: Embedding4bit looks up each row's absmax directly (fp32 per 64 weights).
    packed = bnb.nn.Params4bit(embedding.weight.data, requires_grad=False, quant_type=quant_type,
                               compress_statistics=False).to(embedding.weight.device)
    quantized = _embedding_class()(vocab, width, dtype=RESIDUAL_DTYPE, quant_type=quant_type, device="meta")
    quantized.weight = packed
    quantized.padding_idx = embedding.padding_idx
    model.set_input_embeddings(quantized)
    if head is None:
        return
    if head.bias is not None:
        raise ValueError(f"{type(model).__name__}: an LM head with a bias cannot be stored in 4-bit here; "
                         "set quantization.embeddings: 16bit")
    if not tied:
        packed = bnb.nn.Params4bit(head.weight.data, requires_grad=False, quant_type=quant_type,
                                   compress_statistics=False).to(head.weight.device)
    model.set_output_embeddings(NF4Head(packed, tied))
