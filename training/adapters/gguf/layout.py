"""How a merged model of the bundle's architectures is laid out in a GGUF file, through the gguf package.

llama.cpp reads LlamaForCausalLM and MistralForCausalLM (Llama-2, Mistral-7B, SmolLM2) as its
architecture "llama", FalconForCausalLM (Falcon-7B) as "falcon" and Gemma3ForCausalLM (Gemma-3-270M)
as "gemma3" (what Gemma 3 adds: gemma3.py). What this module decides, and why:
- hyperparameters: the `<arch>.*` keys llama.cpp reads (context, widths, heads, norm epsilon,
  rope base), from the transformers config;
- tensor names: the gguf package's own map (gguf.get_tensor_name_map), never a hand-written table;
- llama's q_proj/k_proj rows are reordered per head: transformers rotates the two halves of each
  head (rotate_half), llama.cpp's rope rotates neighbouring pairs, so the rows are interleaved
  (transformers' GGUF reader undoes exactly this when it loads the file);
- Falcon-7B's fused query_key_value ([all query heads; one key; one value]) is already the row order
  llama.cpp's falcon expects; the Falcon-40B layout (new_decoder_architecture) is refused;
- an output layer tied to the embeddings is not written (llama.cpp then uses token_embd);
- 1-D tensors (norms, biases) stay float32; 2-D ones take the file's type (Q8_0 needs rows that
  are a multiple of 32 wide; narrower ones stay float16).
Anything else a config asks for that this exporter does not write (rope scaling, biases in
Llama attention, ALiBi) is refused by name, rather than written wrongly.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import gguf
import numpy as np

from training.adapters.gguf import gemma3
from training.families import FAMILIES

LLAMA, FALCON, GEMMA3 = gguf.MODEL_ARCH.LLAMA, gguf.MODEL_ARCH.FALCON, gguf.MODEL_ARCH.GEMMA3
_ARCH_BY_NAME = {name: arch for arch, name in gguf.MODEL_ARCH_NAMES.items()}
# transformers class -> llama.cpp architecture, from the family table (families.py: gguf_architecture)
ARCHITECTURES = {family.architecture: _ARCH_BY_NAME[family.gguf_architecture] for family in FAMILIES.values()}
# a config without `architectures` names its class by model_type
CLASS_OF_MODEL_TYPE = {model_type: family.architecture for family in FAMILIES.values()
                       for model_type in family.model_types}
# the GGUF file type, and the tensor type of its 2-D tensors
FILE_TYPES = {
    "f16": (gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
    "bf16": (gguf.LlamaFileType.MOSTLY_BF16, gguf.GGMLQuantizationType.BF16),
    "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
}
UNSUPPORTED = "; export it with llama.cpp's convert_hf_to_gguf.py instead"


def gguf_architecture(config) -> gguf.MODEL_ARCH:
    """The llama.cpp architecture of a transformers config, or ValueError naming what is not supported."""
    name = (getattr(config, "architectures", None) or [None])[0] or CLASS_OF_MODEL_TYPE.get(config.model_type)
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture {name or config.model_type!r} cannot be exported to GGUF here; supported: "
                         f"{', '.join(ARCHITECTURES)}")
    problems = {LLAMA: _llama_problems, FALCON: _falcon_problems, GEMMA3: gemma3.problems}[ARCHITECTURES[name]](config)
    if problems:
        raise ValueError(f"{name}: " + "; ".join(problems) + UNSUPPORTED)
    return ARCHITECTURES[name]


def _rope(config) -> dict:
    return dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})


def _llama_problems(config) -> list[str]:
    problems = []
    if _rope(config).get("rope_type", "default") != "default":
        problems.append(f"rope scaling {_rope(config).get('rope_type')!r} is not written by this exporter")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        problems.append("biases in attention or MLP layers are not written by this exporter")
    return problems


def _falcon_problems(config) -> list[str]:
    problems = []
    if getattr(config, "new_decoder_architecture", False):
        problems.append("the Falcon-40B layout (new_decoder_architecture) is not written by this exporter")
    if getattr(config, "alibi", False) or not getattr(config, "parallel_attn", True):
        problems.append("ALiBi or sequential attention (Falcon-RW) is not supported by llama.cpp's falcon")
    if getattr(config, "bias", False):
        problems.append("biases in linear layers are not written by this exporter")
    return problems


def rope_theta(config) -> float:
    return float(_rope(config).get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def add_hyperparameters(writer: gguf.GGUFWriter, config, arch: gguf.MODEL_ARCH) -> None:
    """The `<arch>.*` keys llama.cpp reads to build the model."""
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_vocab_size(config.vocab_size)
    if arch == GEMMA3:
        gemma3.add_hyperparameters(writer, config)
        return
    writer.add_rope_freq_base(rope_theta(config))
    if arch == FALCON:
        writer.add_feed_forward_length(config.ffn_hidden_size)
        writer.add_head_count_kv(1 if config.multi_query else config.num_kv_heads)
        writer.add_layer_norm_eps(config.layer_norm_epsilon)
        return
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim(config))
    if head_dim(config) != config.hidden_size // config.num_attention_heads:
        writer.add_key_length(head_dim(config))
        writer.add_value_length(head_dim(config))


def interleave_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of each head from [first halves; second halves] to pairs (transformers' rope -> llama.cpp's)."""
    rows, columns = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, columns).swapaxes(1, 2).reshape(rows, columns)


def tensor_type(shape: tuple[int, ...], gguf_type: str) -> gguf.GGMLQuantizationType:
    if len(shape) == 1:
        return gguf.GGMLQuantizationType.F32
    wanted = FILE_TYPES[gguf_type][1]
    if wanted == gguf.GGMLQuantizationType.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[wanted][0]:
        return gguf.GGMLQuantizationType.F16
    return wanted


def gguf_tensors(model, arch: gguf.MODEL_ARCH) -> list[tuple[str, tuple[int, ...], Callable[[], np.ndarray]]]:
    """(GGUF name, shape, its float32 array in llama.cpp's row order, made when called) for every tensor."""
    config = model.config
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = getattr(config, "tie_word_embeddings", False)
    transform = {LLAMA: _llama_transform, FALCON: _as_stored, GEMMA3: gemma3.tensor_transform}[arch](config)
    tensors = []
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"tensor {hf_name} of the merged model has no GGUF name for {arch.name.lower()}"
                             + UNSUPPORTED)
        tensors.append((name, tuple(tensor.shape), partial(_array, tensor, transform(hf_name))))
    return tensors


def _llama_transform(config) -> Callable[[str], Callable[[np.ndarray], np.ndarray] | None]:
    """q_proj and k_proj rows interleaved per head (interleave_rope_rows), every other tensor as it is."""
    heads = {"self_attn.q_proj.weight": config.num_attention_heads,
             "self_attn.k_proj.weight": config.num_key_value_heads}
    return lambda hf_name: next((partial(interleave_rope_rows, heads=n) for suffix, n in heads.items()
                                 if hf_name.endswith(suffix)), None)


def _as_stored(config) -> Callable[[str], None]:
    return lambda hf_name: None


def _array(tensor, transform: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray:
    array = tensor.detach().float().cpu().numpy()
    return np.asarray(transform(array), dtype=np.float32) if transform else array


def tensor_bytes(shape: tuple[int, ...], tensor_type_: gguf.GGMLQuantizationType) -> int:
    return int(np.prod(gguf.quant_shape_to_byte_shape(shape, tensor_type_)))


def estimated_file_bytes(meta_model, gguf_type: str) -> int:
    """The tensor bytes of the GGUF file for a model built on the meta device (no weights loaded)."""
    tied = getattr(meta_model.config, "tie_word_embeddings", False)
    total = 0
    for name, tensor in meta_model.state_dict().items():
        if tied and name == "lm_head.weight":
            continue
        total += tensor_bytes(tuple(tensor.shape), tensor_type(tuple(tensor.shape), gguf_type))
    return total
