"""The "Memoria" table: memory for inference (16/8/4-bit) and training (full, LoRA, QLoRA), with the breakdown.

Every number comes from `training.memory.estimate`, the function behind
`python -m training memory`, with the same arguments the CLI passes (its defaults for
everything the panel does not ask), so the panel and the CLI agree to the byte. No webui:

    rows = memory_rows(load_model_config("mistral-7b"), seq_len=1024, batch=4, rank=16)
    print(memory_markdown(rows))
"""

from __future__ import annotations

from training.files import GIB
from training.memory.estimate import Estimate, MemorySettings, estimate

# (label, method, bits): the scenarios of the table, in the CLI's names.
SCENARIOS = (
    ("Inferencia 16 bits", "inference", 16),
    ("Inferencia 8 bits", "inference", 8),
    ("Inferencia 4 bits", "inference", 4),
    ("Entrenamiento completo (16 bits)", "full", 16),
    ("LoRA (16 bits)", "lora", 16),
    ("QLoRA (4 bits)", "qlora", 4),
)
PART_LABELS = {
    "weights": "pesos",
    "quant_constants": "constantes de cuantización",
    "lora_weights": "pesos LoRA",
    "gradients": "gradientes",
    "optimizer_states": "optimizador",
    "activations": "activaciones",
    "prefill": "prefill",
    "peak_transient": "pico transitorio",
    "kv_cache": "caché KV",
    "cuda_context": "contexto CUDA",
}


def memory_rows(config: dict, seq_len: int, batch: int, rank: int,
                gradient_checkpointing: bool = True) -> list[tuple[str, Estimate]]:
    """(label, estimate) for every scenario; ValueError names a bad setting (from training.memory)."""
    return [(label, estimate(config, MemorySettings(method=method, bits=bits, seq_len=seq_len, batch=batch, rank=rank,
                                                    gradient_checkpointing=gradient_checkpointing)))
            for label, method, bits in SCENARIOS]


def gib(value: int) -> str:
    """Bytes as GiB with two decimals, as `python -m training memory` prints them."""
    return f"{value / GIB:.2f}"


def memory_markdown(rows: list[tuple[str, Estimate]]) -> str:
    """A Markdown table: one row per scenario, one column per part of the breakdown, in GiB."""
    parts = [key for key in PART_LABELS if any(key in result.breakdown for _, result in rows)]
    parts += [key for _, result in rows for key in result.breakdown if key not in parts]  # future parts too
    first = rows[0][1]
    settings = first.settings
    lines = [
        f"**{first.model}**: {first.params / 1e9:.3f} B parámetros; lote {settings['batch']} × "
        f"{settings['seq_len']} tokens, rango LoRA {settings['rank']}, gradient checkpointing "
        f"{'sí' if settings['gradient_checkpointing'] else 'no'}, {settings['optimizer']}, GPU ({settings['device']}). "
        "Valores en GiB.", "",
        "| escenario | " + " | ".join(PART_LABELS.get(key, key) for key in parts) + " | **total** |",
        "| --- |" + " ---: |" * (len(parts) + 1),
    ]
    for label, result in rows:
        cells = [gib(result.breakdown[key]) if key in result.breakdown else "—" for key in parts]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | **{gib(result.total_bytes)}** |")
    return "\n".join(lines) + "\n"
