"""How fast `python -m training fuse` is on adapters shaped like the shipped 7B ones.

    python bench/fuse_speed.py [--layers 32]

Two random fp32 adapters shaped like Llama-2-7B QLoRA adapters (r=16, q/k/v/o/gate/up/down,
hidden 4096, intermediate 11008, 32 layers, ~160 MB each) are written as safetensors files
to a temporary folder; `cat` and `svd --rank 16` are timed end to end (read, fuse, write).
Baselines measured in the same run, on samples scaled up because they are slow: the naive
way to fuse or check (materialise every d_out x d_in delta; 4 layers), a full SVD of the
materialised delta as PEFT's `svd` combination does (one q_proj; a lower bound), and PEFT's own
`add_weighted_adapter(combination_type="cat")` on a one-layer model of the same shapes (in
memory only: no file reading or writing, which ours includes).
Everything runs on one torch thread, as the fuser does. The last line is one JSON object with
the figures. Not a test; target: `cat` < 5 s on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training.adapters.fuse import FuseSettings, fuse_adapters  # noqa: E402

HIDDEN, INTERMEDIATE, RANK = 4096, 11008, 16
SHAPES = {  # module: (d_in, d_out)
    "self_attn.q_proj": (HIDDEN, HIDDEN),
    "self_attn.k_proj": (HIDDEN, HIDDEN),
    "self_attn.v_proj": (HIDDEN, HIDDEN),
    "self_attn.o_proj": (HIDDEN, HIDDEN),
    "mlp.gate_proj": (HIDDEN, INTERMEDIATE),
    "mlp.up_proj": (HIDDEN, INTERMEDIATE),
    "mlp.down_proj": (INTERMEDIATE, HIDDEN),
}


def adapter_tensors(layers: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for layer in range(layers):
        for module, (d_in, d_out) in SHAPES.items():
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(RANK, d_in, generator=generator) / d_in**0.5
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(d_out, RANK, generator=generator) * 0.01
    return tensors


def write_adapter(folder: Path, tensors: dict) -> Path:
    folder.mkdir(parents=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": RANK,
        "lora_alpha": 32,
        "use_rslora": False,
        "target_modules": [m.split(".")[-1] for m in SHAPES],
        "base_model_name_or_path": "meta-llama/Llama-2-7b-chat-hf",
    }
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def naive_deltas(sources: list[dict], layers: int) -> None:
    """Form each module's d_out x d_in delta, as merge-based fusion (or a check of it) does."""
    for layer in range(layers):
        for module in SHAPES:
            prefix = f"base_model.model.model.layers.{layer}.{module}"
            _ = sum(2.0 * s[f"{prefix}.lora_B.weight"] @ s[f"{prefix}.lora_A.weight"] for s in sources)


def full_svd_one_module(sources: list[dict]) -> None:
    """PEFT's `svd` combination: a full SVD of the materialised delta (here of one q_proj)."""
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    delta = sum(2.0 * s[f"{prefix}.lora_B.weight"] @ s[f"{prefix}.lora_A.weight"] for s in sources)
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    _ = (u[:, :RANK] * s[:RANK], vh[:RANK])


def peft_cat_one_layer(sources: list[dict]) -> float:
    """Seconds PEFT's add_weighted_adapter(cat) takes for one layer of these shapes."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=1, num_attention_heads=32, vocab_size=32
    )
    with torch.device("cpu"):
        model = LlamaForCausalLM(config)
    lora = LoraConfig(r=RANK, lora_alpha=32, target_modules=[m.split(".")[-1] for m in SHAPES])
    model = get_peft_model(model, lora, adapter_name="a")
    model.add_adapter("b", lora)
    for name, tensors in zip(("a", "b"), sources, strict=True):
        layer0 = {k: v for k, v in tensors.items() if ".layers.0." in k}
        set_peft_model_state_dict(model, layer0, adapter_name=name)
    seconds, _ = timed(lambda: model.add_weighted_adapter(["a", "b"], [1.0, 1.0], "m", combination_type="cat"))
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=32)
    layers = parser.parse_args().layers
    torch.set_num_threads(1)  # ours runs on one thread (see training/adapters/fuse.py); same for the baselines
    print(f"load average before the run: {os.getloadavg()[0]:.1f} (2 cores shared with other jobs)")
    sources = [adapter_tensors(layers, seed) for seed in (1, 2)]
    with tempfile.TemporaryDirectory() as tmp:
        dirs = [write_adapter(Path(tmp) / name, tensors) for name, tensors in zip("ab", sources, strict=True)]
        cat_s, cat = timed(lambda: fuse_adapters(FuseSettings(adapters=dirs, out=Path(tmp) / "cat")))
        svd_s, svd = timed(lambda: fuse_adapters(FuseSettings(adapters=dirs, out=Path(tmp) / "svd", method="svd",
                                                              rank=RANK)))
    print(f"ours  cat: {cat_s:.2f} s (r={cat.rank}); svd --rank {RANK}: {svd_s:.2f} s (error {svd.overall_error:.3f})")
    sample = min(layers, 4)  # the baselines are slow: measured on a sample, scaled to all layers
    naive_s = timed(lambda: naive_deltas(sources, sample))[0] * layers / sample
    print(f"naive delta materialisation: {naive_s:.1f} s ({sample} layers measured, x{layers / sample:g})")
    modules = layers * len(SHAPES)
    full_svd_s = timed(lambda: full_svd_one_module(sources))[0] * modules
    print(
        f"full SVD of the delta (PEFT's svd way): >= {full_svd_s:.0f} s "
        f"(one 4096x4096 module x {modules}; larger ones cost more)"
    )
    peft_cat_s = peft_cat_one_layer(sources) * layers
    print(f"PEFT add_weighted_adapter(cat), in memory only: {peft_cat_s:.2f} s (1 layer x {layers})")
    figures = {
        "layers": layers,
        "load_average": round(os.getloadavg()[0], 1),
        "fuse_cat_s": round(cat_s, 3),
        "fuse_svd_s": round(svd_s, 3),
        "svd_error": round(svd.overall_error, 4),
        "naive_delta_s_est": round(naive_s, 1),
        "full_svd_s_lower_bound": round(full_svd_s),
        "peft_cat_in_memory_s_est": round(peft_cat_s, 2),
        "naive_over_cat": round(naive_s / cat_s, 1),
        "full_svd_over_svd": round(full_svd_s / svd_s),
        "peft_cat_over_cat": round(peft_cat_s / cat_s, 2),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
