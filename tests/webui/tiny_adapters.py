"""Real PEFT LoRA adapters on a tiny model, with a spanish_ft training record (test helper, not shipped).

Used by the extension's tests, the opt-in webui integration test and the screenshot script:

    make_adapter(base_dir, lora_dir / "llama2-instrucciones", task="instrucciones", rank=4, seed=1)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

FAMILY_TEMPLATES = {"llama2": "spanish_ft-Llama-2-chat", "mistral": "spanish_ft-Mistral", "falcon": "spanish_ft-Falcon"}
TARGETS = {"llama2": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "falcon": ["query_key_value"]}


def training_record(name: str, family: str, task: str, base_dir: Path, config) -> dict:
    """A record with the fields the extension reads (training/adapters/record.py lists them all)."""
    template = FAMILY_TEMPLATES[family]
    return {
        "format": 1, "kind": "trained", "name": name, "family": family, "task": task,
        "base_model": {"name_or_path": Path(base_dir).name, "revision": None},
        "base_shape": {"model_type": config.model_type, "hidden_size": config.hidden_size,
                       "num_hidden_layers": config.num_hidden_layers, "vocab_size": config.vocab_size},
        "template": {"name": template, "file": f"{template}.yaml", "sha256": "0" * 64},
        "preset": template,
    }


def make_adapter(base_dir: Path, out_dir: Path, family: str = "llama2", task: str = "instrucciones",
                 rank: int = 4, seed: int = 1, scale: float = 0.5, record: bool = True) -> Path:
    """Save a LoRA adapter with random non-zero A and B (so it visibly changes the model) to out_dir."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=TARGETS[family], init_lora_weights=False,
                        task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn_like(param) * scale)
    peft_model.save_pretrained(out_dir)
    if record:
        data = training_record(Path(out_dir).name, family, task, base_dir, model.config)
        (Path(out_dir) / "spanish_ft_record.json").write_text(json.dumps(data, indent=2), encoding="utf-8")
    return Path(out_dir)
