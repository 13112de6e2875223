"""What a Gemma 3 model (Gemma3ForCausalLM, Gemma-3-270M and 1B) needs in a GGUF file, as llama.cpp's "gemma3" reads it.

llama.cpp's gemma3 (src/models/gemma3.cpp, and its converter's Gemma3Model) differs from llama in ways that
change numbers, each matched here:
- RMSNorm weights: transformers computes x * (1 + w), llama.cpp x * w, so 1 is added to every norm weight
  (the layer norms, the final norm and the q/k norms);
- rope rotates the two halves of each head ("neox", as transformers does): q/k rows keep their order;
- the query scale is not in the file: llama.cpp takes 1/sqrt(head_dim) (1/sqrt(hidden/heads) for its
  62-layer 27B), where transformers takes 1/sqrt(query_pre_attn_scalar). The real models agree; for any
  other config the ratio is folded into the q norm weight, which multiplies the query just before rope
  (a rotation) and the scale, so llama.cpp computes what transformers does;
- sliding-window layers: the window, which layers slide (`attention.sliding_window_pattern`: the period
  n when layer i slides exactly when i % n < n - 1, as Gemma 3's 6, which older llama.cpp assumes without
  the key; else one flag per layer) and their own rope base (`rope.freq_base_swa`); the global layers'
  base is `rope.freq_base`;
- key and value width = head_dim, written always; the final logit softcap when the config sets one;
- the embedding (scaled by sqrt(hidden) in both) doubles as the output layer when tied.
Refused by name: rope scaling, attention biases, attention logit softcapping (Gemma 2's, not in llama.cpp's
gemma3), bidirectional attention (EmbeddingGemma), another activation than the tanh GELU llama.cpp uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import gguf
import numpy as np

SLIDING, FULL = "sliding_attention", "full_attention"
LLAMA_CPP_27B_LAYERS = 62  # llama.cpp's gemma3 scales queries by 1/sqrt(hidden/heads) for this layer count only


def problems(config) -> list[str]:
    found = []
    for layer_type in (SLIDING, FULL):
        rope_type = _rope_parameters(config, layer_type).get("rope_type", "default")
        if rope_type != "default":
            found.append(f"rope scaling {rope_type!r} ({layer_type} layers) is not written by this exporter")
    if getattr(config, "attention_bias", False):
        found.append("biases in attention layers are not written by this exporter")
    if getattr(config, "attn_logit_softcapping", None):
        found.append("attention logit softcapping is not computed by llama.cpp's gemma3")
    if getattr(config, "use_bidirectional_attention", False):
        found.append("bidirectional attention (an embedding model) is not llama.cpp's gemma3")
    if getattr(config, "hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        found.append(f"activation {config.hidden_activation!r}: llama.cpp's gemma3 computes the tanh GELU")
    unknown = sorted(set(layer_types(config)) - {SLIDING, FULL})
    if unknown:
        found.append(f"layer types {', '.join(unknown)} are not llama.cpp's gemma3")
    return found


def layer_types(config) -> list[str]:
    return list(getattr(config, "layer_types", None) or [FULL] * config.num_hidden_layers)


def _rope_parameters(config, layer_type: str) -> dict:
    """transformers 5 keeps one rope dict per layer type; older configs had rope_theta and rope_local_base_freq."""
    parameters = getattr(config, "rope_parameters", None) or {}
    if layer_type in parameters:
        return dict(parameters[layer_type])
    legacy = getattr(config, "rope_local_base_freq", 10000.0) if layer_type == SLIDING else config.rope_theta
    return {"rope_type": "default", "rope_theta": legacy}


def sliding_window_pattern(config) -> int | list[bool]:
    """The period n of llama.cpp's rule (layer i slides when i % n < n - 1) if the layers follow it, else the flags."""
    sliding = [kind == SLIDING for kind in layer_types(config)]
    for period in range(2, len(sliding) + 1):
        if all(flag == (i % period < period - 1) for i, flag in enumerate(sliding)):
            return period
    return sliding


def add_hyperparameters(writer: gguf.GGUFWriter, config) -> None:
    """The `gemma3.*` keys beyond the common ones (layout.add_hyperparameters)."""
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_freq_base(float(_rope_parameters(config, FULL)["rope_theta"]))
    if SLIDING in layer_types(config):
        writer.add_rope_freq_base_swa(float(_rope_parameters(config, SLIDING)["rope_theta"]))
        writer.add_sliding_window(config.sliding_window)
        writer.add_sliding_window_pattern(sliding_window_pattern(config))
    if getattr(config, "final_logit_softcapping", None):
        writer.add_final_logit_softcapping(float(config.final_logit_softcapping))


def query_scale_ratio(config) -> float:
    """transformers' query scale over llama.cpp's (1.0 for the released Gemma 3 models)."""
    llama_cpp_width = (config.hidden_size // config.num_attention_heads
                       if config.num_hidden_layers == LLAMA_CPP_27B_LAYERS else config.head_dim)
    return math.sqrt(llama_cpp_width / config.query_pre_attn_scalar)


def tensor_transform(config) -> Callable[[str], Callable[[np.ndarray], np.ndarray] | None]:
    """For a transformers tensor name: what turns its array into llama.cpp's (norm weights: 1 + w), or None."""
    ratio = query_scale_ratio(config)

    def transform(hf_name: str):
        if hf_name.endswith("self_attn.q_norm.weight"):
            return lambda array: (array + 1.0) * ratio
        if hf_name.endswith("norm.weight"):
            return lambda array: array + 1.0
        return None

    return transform
