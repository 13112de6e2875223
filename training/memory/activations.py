"""What one decoder layer keeps in memory for backward, term by term, and its short-lived peaks.

Each term names the tensor autograd saves (checked against `torch.autograd.graph.
saved_tensors_hooks` on real models in tests/test_memory.py) for transformers 5.6 + PEFT LoRA:
- Llama/Mistral: RMSNorm upcasts its input to fp32 and saves it; SDPA saves q, k, v, the output
  and a log-sum-exp per head; under a mask K/V are repeated to all heads (a copy, except for one
  K/V head, whose repeat is a stride-0 view) and the boolean mask is converted to a float bias
  that each layer saves; the gated MLP saves gate, SiLU(gate) and up. A mask comes with padding
  (a batch of several rows) and, in a sliding-window layer, with rows as long as the window.
- Gemma 3 on top: four norms per layer, so the attention's and the MLP's outputs are saved too
  (as the post-norms' fp32 inputs); the q/k norms save q and k before them, with statistics per
  head; every norm saves its (1 + weight), a new fp32 tensor per call; GELU-tanh saves its input
  as SiLU does; the embedding's scale by sqrt(hidden) saves only the scalar (a frozen embedding:
  nothing). Sliding-window layers (window 512 on Gemma-3-270M) have a mask from 512 tokens on.
- Falcon (one K/V head), transformers 5.6: SDPA cannot run a fused kernel on mismatched heads and
  falls back to the math path, which saves q, the expanded K and V, and the softmax probabilities
  (batch x heads x seq x seq). Later releases run Falcon through transformers' shared attention
  interface (`falcon_math_attention` tells which one is installed): SDPA then saves q, the one
  K/V head, the output, a log-sum-exp and the float mask, like Llama.
- LoRA: every adapted linear saves its input for lora_A (shared between linears reading the
  same tensor), and lora_B saves lora_A's output (rank values per token). With dropout, each
  linear saves its own dropped copy and the dropout mask instead (CPU: mask in the compute
  dtype; CUDA: one byte).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from training.families import FAMILIES, FUSED_QKV
from training.memory.arch import Architecture


@functools.lru_cache(maxsize=4)
def _uses_attention_interface(modeling_module: str) -> bool:
    """Whether the installed transformers runs `modeling_module`'s attention through its shared attention
    interface (read from the source file, without importing torch); True when transformers is not installed."""
    spec = importlib.util.find_spec("transformers")
    parts = modeling_module.split(".")[1:]
    source = Path(spec.origin).parent.joinpath(*parts).with_suffix(".py") if spec and spec.origin and parts else None
    if source is None or not source.is_file():
        return True
    return "ALL_ATTENTION_FUNCTIONS" in source.read_text(encoding="utf-8")


def falcon_math_attention(arch: Architecture) -> bool:
    """Falcon with one K/V head on transformers' own Falcon attention (5.6): SDPA's math path."""
    if arch.decoder != FUSED_QKV or not (arch.kv_heads == 1 < arch.heads):
        return False
    return not _uses_attention_interface(FAMILIES[arch.family].modeling_module)


def _attention_saved(arch: Architecture, batch: int, seq_len: int, b: int, sliding: bool) -> dict[str, int]:
    tokens, q_dim = batch * seq_len, arch.heads * arch.head_dim
    if falcon_math_attention(arch):
        return {
            "attention q, k, v (math SDPA: the one K/V head expanded to all heads)": 3 * tokens * q_dim * b,
            "attention probabilities (batch x heads x seq^2)": batch * arch.heads * seq_len**2 * b,
        }
    # a batch of several rows has padding, and a row as long as the window needs the window's shape:
    # SDPA gets a mask (transformers' _ignore_causal_mask_sdpa)
    masked = batch > 1 or (sliding and seq_len >= arch.sliding_window)
    if arch.decoder == FUSED_QKV:  # the shared interface: the K/V heads are broadcast, not copied
        kv_dim = q_dim if arch.kv_heads > 1 else arch.kv_heads * arch.head_dim
    else:  # repeat_kv copies several K/V heads to all heads; one K/V head becomes a stride-0 view
        kv_dim = q_dim if masked and arch.kv_heads > 1 else arch.kv_heads * arch.head_dim
    terms = {
        "attention q, k, v, output (SDPA)": tokens * (2 * q_dim + 2 * kv_dim) * b,
        "attention log-sum-exp (fp32)": tokens * arch.heads * 4,
    }
    if masked:
        terms["attention mask as float bias"] = batch * seq_len**2 * b
    return terms


def _linear_inputs(arch: Architecture, tokens: int, b: int, mask_b: int, dropout: float) -> dict[str, int]:
    """Inputs the linear layers keep for their weight gradients (LoRA A, or full fine-tuning)."""
    if dropout > 0:
        dropped = sum(linear.in_features for linear in arch.linears)
        return {"LoRA dropout: dropped copy + mask per linear": tokens * dropped * (b + mask_b)}
    if arch.decoder == FUSED_QKV:
        norm_outputs = 1 if arch.parallel_attn else 2
        # the math attention path reshapes its output into a new tensor for `dense`
        dense_input = arch.hidden if falcon_math_attention(arch) else 0
        shared = norm_outputs * arch.hidden + dense_input + arch.intermediate
    else:  # q/k/v share the first norm's output, gate/up the second's; o_proj's is SDPA's output
        shared = 2 * arch.hidden + arch.intermediate
    return {"linear inputs (norm outputs, MLP product)": tokens * shared * b}


def _rms_norms_saved(arch: Architecture, tokens: int, method: str, b: int) -> dict[str, int]:
    """What the RMSNorms of one layer save: each its own fp32 input (distinct tensors) and statistics."""
    qk_rows = tokens * (arch.heads + arch.kv_heads) if arch.qk_norm else 0  # one row per head and token
    terms = {"norm inputs (RMSNorm upcasts to fp32)": arch.layer_norms * tokens * arch.hidden * 4,
             "norm statistics (fp32)": arch.layer_norms * tokens * 4}
    if arch.qk_norm:
        terms["q/k norm inputs and statistics (fp32)"] = qk_rows * (arch.head_dim + 1) * 4
    if arch.norm_plus_one:
        terms["norm scales 1 + weight (fp32, made anew by each norm)"] = arch.norm_params * 4
    if method == "full":  # the norm weights' gradients need the normalised inputs
        normalised = arch.layer_norms * tokens * arch.hidden + qk_rows * arch.head_dim
        # Llama casts them to the input's dtype before the weight; Gemma multiplies in fp32
        terms["normalised inputs for norm-weight gradients"] = normalised * (4 if arch.norm_plus_one else b)
    return terms


def layer_saved_bytes(
    arch: Architecture, method: str, batch: int, seq_len: int, rank: int, dropout: float, b: int, device: str,
    sliding: bool = False,
) -> dict[str, int]:
    """Bytes autograd saves in one decoder layer (a sliding-window one if `sliding`) during a training
    forward, by named term."""
    tokens = batch * seq_len
    if arch.decoder == FUSED_QKV:
        # LayerNorm keeps its input in the compute dtype; parallel attention has one input
        distinct_inputs = 1 if arch.parallel_attn else 2
        terms = {"norm inputs": tokens * arch.hidden * b * distinct_inputs,
                 "norm statistics (fp32)": arch.layer_norms * tokens * 8}
        mlp = {"MLP up-projection (GELU input)": tokens * arch.intermediate * b}
    else:
        terms = _rms_norms_saved(arch, tokens, method, b)
        mlp = {"MLP gate, activation(gate), up": 3 * tokens * arch.intermediate * b}
    terms.update(_attention_saved(arch, batch, seq_len, b, sliding))
    terms.update(mlp)
    if method == "full":
        terms.update(_linear_inputs(arch, tokens, b, 0, 0.0))
    else:
        terms.update(_linear_inputs(arch, tokens, b, b if device == "cpu" else 1, dropout))
        terms["LoRA A outputs"] = len(arch.linears) * tokens * rank * b
    return terms


def _dequantised_weight(arch: Architecture, b: int, bits: int) -> int:
    """bitsandbytes dequantises a 4/8-bit weight to the compute dtype for each matmul."""
    return max(linear.in_features * linear.out_features for linear in arch.linears) * b if bits < 16 else 0


def _attention_probs(arch: Architecture, batch: int, seq_len: int, b: int) -> int:
    return batch * arch.heads * seq_len**2 * b if falcon_math_attention(arch) else 0


def layer_backward_bytes(arch: Architecture, batch: int, seq_len: int, b: int, bits: int) -> int:
    """Gradients in flight inside one layer's backward (on top of what the layer saved).

    The residual stream's gradient and its copy through the norm, two MLP-width gradients, the
    softmax's two gradients on Falcon's math attention path, and one dequantised weight.
    """
    tokens = batch * seq_len
    flight = tokens * (2 * arch.hidden + 2 * arch.intermediate) * b
    return flight + 2 * _attention_probs(arch, batch, seq_len, b) + _dequantised_weight(arch, b, bits)


def prefill_bytes(arch: Architecture, batch: int, seq_len: int, b: int, bits: int) -> int:
    """Inference: the largest working set of one layer during the prompt's forward, + last logits.

    Nothing is saved between layers; one layer holds the residual stream, its normalised copy and
    the wider of attention (q, k, v, output) and the MLP (three intermediate-wide tensors).
    """
    tokens, q_dim, kv_dim = batch * seq_len, arch.heads * arch.head_dim, arch.kv_heads * arch.head_dim
    widest = max(2 * q_dim + 2 * kv_dim, 3 * arch.intermediate)
    working = tokens * (2 * arch.hidden + widest) * b + _attention_probs(arch, batch, seq_len, b)
    last_logits = batch * arch.vocab * 4  # generate() computes logits for the last position only, in fp32
    return working + _dequantised_weight(arch, b, bits) + last_logits
