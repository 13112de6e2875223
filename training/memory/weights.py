"""The parameter side of a memory estimate: stored weights, quantisation constants, trainable tensors, optimizer states.

Dtypes as training/model/load.py loads them: a 4/8-bit model keeps its embedding and LM head in
16-bit (NF4 with `quantization.embeddings: 4bit`, training/model/embeddings.py) and its norms and
biases in fp32 (the k-bit preparation upcasts them); a 16-bit model holds every weight in the
compute dtype.
"""

from __future__ import annotations

import math

from training.memory.arch import Architecture

NF4_BLOCK, DOUBLE_QUANT_BLOCK = 64, 256
ADAM8_BLOCK, ADAM8_MIN_NUMEL = 256, 4096  # bitsandbytes: smaller tensors keep 32-bit states


def weight_bytes(
    arch: Architecture, method: str, bits: int, compute_bytes: int, double_quant: bool, embeddings: str
) -> tuple[int, int]:
    """(weights, quantisation constants): decoder linears quantised; embeddings 16-bit or NF4; the rest fp32."""
    if bits == 16:
        return arch.total_params * compute_bytes, 0
    layer_weights = layer_constants = 0
    for linear in arch.linears:
        numel = linear.in_features * linear.out_features
        if bits == 8:
            layer_weights += numel
            layer_constants += 4 * linear.out_features
        else:
            blocks = math.ceil(numel / NF4_BLOCK)
            layer_weights += math.ceil(numel / 2)
            # double quantisation: uint8 absmax per block, an fp32 absmax per 256 blocks and one offset
            layer_constants += blocks + 4 * math.ceil(blocks / DOUBLE_QUANT_BLOCK) + 4 if double_quant else 4 * blocks
    matrices = arch.vocab * arch.hidden * (1 if arch.tied_embeddings else 2)  # embedding and LM head
    if embeddings == "4bit":  # no double quantisation: Embedding4bit looks up each row's fp32 absmax
        embedding_bytes, embedding_constants = math.ceil(matrices / 2), 4 * math.ceil(matrices / NF4_BLOCK)
    else:
        embedding_bytes, embedding_constants = 2 * matrices, 0
    # the k-bit preparation upcasts norms and biases to fp32; inference keeps them in the compute dtype
    rest = (arch.total_params - arch.layers * arch.linear_weights_per_layer - matrices) * (
        compute_bytes if method == "inference" else 4)
    weights = arch.layers * layer_weights + embedding_bytes + rest
    return weights, arch.layers * layer_constants + embedding_constants


def weights_note(method: str, bits: int, compute_bytes: int, embeddings: str) -> str:
    compute = "bf16" if compute_bytes == 2 else "fp32"
    if bits == 16:
        return f"all weights in {compute}"
    per_weight = "0.5 byte (NF4)" if bits == 4 else "1 byte (int8)"
    stored = "NF4" if embeddings == "4bit" else "16-bit"
    rest = compute if method == "inference" else "fp32"
    return f"decoder linears {per_weight} per weight; embedding and lm_head {stored}; norms, biases {rest}"


def trainable_tensors(arch: Architecture, method: str, rank: int) -> list[int]:
    """numel of every trainable tensor (the 8-bit optimizer treats small tensors differently)."""
    if method == "inference":
        return []
    if method == "full":
        return [arch.total_params]  # one entry is enough: every tensor of a 7B is above 4096 elements
    per_layer = [n for linear in arch.linears for n in (rank * linear.in_features, rank * linear.out_features)]
    return per_layer * arch.layers


def optimizer_bytes(trainable: list[int], param_bytes: int, optimizer: str) -> int:
    if optimizer == "adamw":  # torch keeps exp_avg and exp_avg_sq in the parameter's dtype
        return 2 * param_bytes * sum(trainable)
    total = 0
    for numel in trainable:
        if numel < ADAM8_MIN_NUMEL:
            total += 8 * numel
        else:  # two uint8 states + one fp32 absmax per 256-element block for each
            total += 2 * numel + 2 * 4 * math.ceil(numel / ADAM8_BLOCK)
    return total
