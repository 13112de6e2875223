"""The model families the bundle supports, in one table: the three 7B families (Mistral,
LLaMA2, Falcon) and `gemma3`, the family of the CPU demo model (Gemma-3-270M, `demo=True`:
no 7B recipe; its recipes are training/recipes/demo-gemma3-*.yaml).

Everything that differs between the families lives here: the transformers
`model_type`s and architecture class, the LoRA target modules (all linear layers of the
decoder), the shipped instruction template and preset, and the `nn.Linear` subclasses that
must be built as plain `nn.Linear` for bitsandbytes to quantise them. The trainer, the
fuser and the webui extension import this table; nothing else hard-codes a family.

    from training.families import FAMILIES, family_of_model_type
    FAMILIES["falcon"].lora_targets      # ('query_key_value', 'dense', ...)
    family_of_model_type("mistral")      # 'mistral'
"""

from __future__ import annotations

from dataclasses import dataclass


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
    ),
    "llama2": Family(
        name="llama2",
        model_types=("llama",),
        lora_targets=_LLAMA_STYLE_TARGETS,
        template_file="instruction-templates/spanish_ft-Llama-2-chat.yaml",
        preset="spanish_ft-Llama-2-chat",
        architecture="LlamaForCausalLM",
        packs_by_position_ids=True,
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
    ),
}

SEVEN_B_FAMILIES: tuple[str, ...] = tuple(name for name, family in FAMILIES.items() if not family.demo)


def notice_of(family: str | None) -> str:
    """The licence notice files made from this family's models carry ("" for none or an unknown family)."""
    return FAMILIES[family].notice if family in FAMILIES else ""


def family_of_model_type(model_type: str | None) -> str | None:
    """The family name for a transformers `config.model_type`, or None if not one of ours."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family.name
    return None
