"""The model families the bundle supports, in one table: the three 7B families (Mistral,
LLaMA2, Falcon) and `gemma3`, the family of the CPU demo model (Gemma-3-270M, `demo=True`:
no 7B recipe; its recipes are training/recipes/demo-gemma3-*.yaml).

Everything that differs between the families lives here: the transformers
`model_type`s and architecture class, the LoRA target modules (all linear layers of the
decoder), the shipped instruction template and preset, the `nn.Linear` subclasses that
must be built as plain `nn.Linear` for bitsandbytes to quantise them, the decoder's layout
as the memory estimator reads it, the shipped model config the plan estimates from, and
llama.cpp's architecture for the GGUF export. The trainer, the fuser, the estimator, the
exporter and the webui extension import this table; nothing else writes a family's name
(tests/test_names.py checks it).

    from training.families import FAMILIES, family_of_model_type
    FAMILIES["falcon"].lora_targets      # ('query_key_value', 'dense', ...)
    family_of_model_type("mistral")      # 'mistral'
"""

from __future__ import annotations

from dataclasses import dataclass

# A decoder's layout, as the memory estimator reads it (training/memory/arch.py):
SEPARATE_QKV = "separate-qkv"  # q/k/v/o projections, gated MLP, RMSNorm (Llama, Mistral, Gemma 3)
FUSED_QKV = "fused-qkv"  # one query_key_value projection, GELU MLP, LayerNorm, parallel attention (Falcon)
# Which layers attend through a sliding window when the config sets `sliding_window`:
NO_WINDOW, EVERY_LAYER, BY_LAYER_TYPE = "none", "every layer", "by layer type"


@dataclass(frozen=True)
class Family:
    """One model family: how to recognise, quantise, adapt and prompt it."""

    name: str
    model_types: tuple[str, ...]
    lora_targets: tuple[str, ...]
    template_file: str  # relative to the repository root
    preset: str  # webui preset name (file stem under presets/)
    architecture: str = ""  # transformers class name, for messages and the record
    # `module:Class` of nn.Linear subclasses that transformers' bitsandbytes integration skips
    # (it replaces only modules whose type is exactly nn.Linear), built as nn.Linear instead.
    linear_subclasses: tuple[str, ...] = ()
    # every supported transformers builds this architecture's attention mask from restarting position ids, so
    # conversations packed into one row stay apart (training/data/batches.py; checked by tests/test_packing.py);
    # where False, training.data.batches.positions_separate_conversations measures the installed version.
    packs_by_position_ids: bool = False
    # the family of the CPU demo's small model rather than a 7B family (its recipes are demo-<name>-<task>.yaml)
    demo: bool = False
    # a licence notice that every file made from the family's models must carry (NOTICE, cards, GGUF metadata)
    notice: str = ""
    # (GGUF general.license, general.license.link) of that licence, when a file made from the family names it
    licence: tuple[str, str] | None = None
    # the shipped config.json (training/memory/configs/<name>.json) that plans and estimates read for this family
    memory_config: str = ""
    decoder: str = SEPARATE_QKV  # the decoder's layout (SEPARATE_QKV or FUSED_QKV)
    # RMSNorms before and after attention and the MLP and on each head's queries and keys, scaling by (1 + weight),
    # and embeddings tied unless the config says otherwise (Gemma 3)
    sandwich_norms: bool = False
    sliding_window: str = NO_WINDOW  # which layers a config's `sliding_window` applies to (transformers' rule)
    gguf_architecture: str = ""  # llama.cpp's architecture for the GGUF export (gguf.MODEL_ARCH_NAMES)
    # transformers' module of the family's attention, where the estimator reads which attention path the installed
    # version takes (set where that changes the memory: Falcon's one K/V head)
    modeling_module: str = ""


GEMMA_TERMS_URL = "https://ai.google.dev/gemma/terms"
GEMMA_NOTICE = ("Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms. "
                "This is a model or adapter derived from Google's Gemma; the Gemma Terms of Use apply to it and to "
                "everything made from it.\n")

_LLAMA_STYLE_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

FAMILIES: dict[str, Family] = {
    "mistral": Family(
        name="mistral",
        model_types=("mistral",),
        lora_targets=_LLAMA_STYLE_TARGETS,
        template_file="instruction-templates/spanish_ft-Mistral.yaml",
        preset="spanish_ft-Mistral",
        architecture="MistralForCausalLM",
        packs_by_position_ids=True,
        memory_config="mistral-7b",
        sliding_window=EVERY_LAYER,  # MistralAttention passes config.sliding_window to every layer
        gguf_architecture="llama",
    ),
    "llama2": Family(
        name="llama2",
        model_types=("llama",),
        lora_targets=_LLAMA_STYLE_TARGETS,
        template_file="instruction-templates/spanish_ft-Llama-2-chat.yaml",
        preset="spanish_ft-Llama-2-chat",
        architecture="LlamaForCausalLM",
        packs_by_position_ids=True,
        memory_config="llama2-7b",
        gguf_architecture="llama",
    ),
    "falcon": Family(
        name="falcon",
        # RefinedWeb* are the model_types of the original remote-code Falcon checkpoints.
        model_types=("falcon", "RefinedWeb", "RefinedWebModel"),
        lora_targets=("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
        template_file="instruction-templates/spanish_ft-Falcon.yaml",
        preset="spanish_ft-Falcon",
        architecture="FalconForCausalLM",
        linear_subclasses=("transformers.models.falcon.modeling_falcon:FalconLinear",),
        memory_config="falcon-7b",
        decoder=FUSED_QKV,
        modeling_module="transformers.models.falcon.modeling_falcon",
        gguf_architecture="falcon",
    ),
    "gemma3": Family(
        name="gemma3",
        # the text-only Gemma 3 (Gemma3ForCausalLM: 270M, 1B); "gemma3" is the multimodal 4B-27B wrapper
        model_types=("gemma3_text",),
        lora_targets=_LLAMA_STYLE_TARGETS,
        template_file="instruction-templates/spanish_ft-Gemma.yaml",
        preset="spanish_ft-Gemma",
        architecture="Gemma3ForCausalLM",
        demo=True,
        notice=GEMMA_NOTICE,
        licence=("gemma", GEMMA_TERMS_URL),
        memory_config="gemma3-270m",
        sandwich_norms=True,
        # Gemma3TextConfig: `layer_types`, or every `sliding_window_pattern`-th layer global
        sliding_window=BY_LAYER_TYPE,
        gguf_architecture="gemma3",
    ),
}

SEVEN_B_FAMILIES: tuple[str, ...] = tuple(name for name, family in FAMILIES.items() if not family.demo)
DEMO_FAMILY: Family = next(family for family in FAMILIES.values() if family.demo)


def notice_of(family: str | None) -> str:
    """The licence notice files made from this family's models carry ("" for none or an unknown family)."""
    return FAMILIES[family].notice if family in FAMILIES else ""


def family_of_model_type(model_type: str | None) -> str | None:
    """The family name for a transformers `config.model_type`, or None if not one of ours."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family.name
    return None
