"""The three model families the bundle supports, in one table.

Everything that differs between Mistral, LLaMA2 and Falcon lives here: the transformers
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
}


def family_of_model_type(model_type: str | None) -> str | None:
    """The family name for a transformers `config.model_type`, or None if not one of ours."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family.name
    return None
