"""The memory estimator: parameter counts, LoRA sizes and saved activations against real models."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model
from tiny import build_model_dir
from transformers import AutoModelForCausalLM, BitsAndBytesConfig, FalconConfig, LlamaConfig

from training.__main__ import main
from training.families import FAMILIES
from training.files import GIB
from training.memory.activations import layer_saved_bytes
from training.memory.arch import architecture_of, load_model_config
from training.memory.estimate import MemorySettings, estimate

PUBLISHED_PARAMS = {"mistral-7b": 7.24e9, "llama2-7b": 6.74e9, "falcon-7b": 6.92e9, "llama3-8b": 8.03e9,
                    "gemma3-270m": 2.68e8}

# Shapes the shipped tiny models do not cover: Falcon's new decoder architecture (grouped KV,
# two norms), Falcon without parallel attention and with biases, Llama with biases and tied embeddings.
VARIANTS = {
    "falcon-new-arch": FalconConfig(vocab_size=300, hidden_size=128, num_hidden_layers=2, num_attention_heads=8,
                                    new_decoder_architecture=True, num_kv_heads=2, parallel_attn=True, bias=False),
    "falcon-sequential": FalconConfig(vocab_size=300, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      multi_query=False, parallel_attn=False, bias=True),
    "llama-biased-tied": LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=1, attention_bias=True,
                                     mlp_bias=True, tie_word_embeddings=True),
}


def _config(model_dir) -> dict:
    return json.loads((model_dir / "config.json").read_text())


@pytest.mark.parametrize("family", ["llama2", "mistral", "falcon", "gemma3"])
def test_parameter_count_matches_the_real_tiny_model(tiny_model_dirs, family):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs[family])
    assert architecture_of(_config(tiny_model_dirs[family])).total_params == model.num_parameters()


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_parameter_count_matches_other_shapes_of_the_families(name):
    model = AutoModelForCausalLM.from_config(VARIANTS[name])
    assert architecture_of(VARIANTS[name].to_dict()).total_params == model.num_parameters()


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_parameter_count_of_the_shipped_configs_matches_the_published_size(name):
    assert architecture_of(load_model_config(name)).total_params == pytest.approx(PUBLISHED_PARAMS[name], rel=0.01)


def test_gemma3_sliding_window_layers_are_counted_as_transformers_builds_them():
    """Gemma-3-270M: five sliding-window layers (window 512) before each of three global ones, from
    `layer_types` or, without it, from the pattern Gemma3TextConfig derives it from."""
    config = load_model_config("gemma3-270m")
    arch = architecture_of(config)
    assert (arch.sliding_window, arch.layer_kinds) == (512, {False: 3, True: 15})
    assert arch.head_dim * arch.heads != arch.hidden and arch.tied_embeddings and arch.qk_norm
    without_types = {key: value for key, value in config.items() if key != "layer_types"}
    assert architecture_of(without_types).layer_kinds == arch.layer_kinds
    assert architecture_of(load_model_config("mistral-7b")).layer_kinds == {True: 32}  # a window in every layer


@pytest.mark.parametrize("family", ["llama2", "mistral", "falcon", "gemma3"])
def test_lora_size_matches_peft_trainable_parameters(tiny_model_dirs, family):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs[family])
    peft_model = get_peft_model(model, LoraConfig(r=8, target_modules=list(FAMILIES[family].lora_targets)))
    trainable, _ = peft_model.get_nb_trainable_parameters()
    result = estimate(_config(tiny_model_dirs[family]),
        MemorySettings(method="qlora", bits=4, seq_len=64, batch=2, rank=8, device="cpu"))
    assert result.trainable_params == trainable
    assert result.breakdown["lora_weights"] == 4 * trainable  # fp32, as PEFT keeps them


def _saved_bytes_of_layer(model, layer, batch: int, seq_len: int) -> int:
    """Bytes of the distinct tensors autograd first saves while `layer` runs forward.

    Parameters, and tensors made before the layers (the rotary cos/sin, saved by the first layer of
    each attention type that uses them), are not the layer's.
    """
    earlier = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen, inside = {}, [False]

    def made_outside(_module, _args, output):
        earlier.update(tensor.untyped_storage().data_ptr() for tensor in output)

    for name, module in model.named_modules():
        if name.endswith("rotary_emb"):
            module.register_forward_hook(made_outside)

    def pack(tensor):
        storage = tensor.untyped_storage()
        if not inside[0]:
            earlier.add(storage.data_ptr())
        elif storage.data_ptr() not in earlier:
            seen[storage.data_ptr()] = storage.nbytes()
        return tensor

    layer.register_forward_pre_hook(lambda *_: inside.__setitem__(0, True))
    layer.register_forward_hook(lambda *_: inside.__setitem__(0, False))
    ids = torch.randint(5, model.config.vocab_size, (batch, seq_len), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, : seq_len // 4] = 0 if batch > 1 else 1  # several rows: the first one is padded
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=ids, attention_mask=mask, labels=ids)
    return sum(seen.values())


def _check_saved_activations(model_dir, family: str, layer_index: int, batch: int, seq_len: int, dropout: float):
    """QLoRA on the CPU (NF4, fp32 compute): the named terms add up to what autograd really keeps."""
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, quantization_config=quant)
    lora = LoraConfig(r=8, lora_dropout=dropout, target_modules=list(FAMILIES[family].lora_targets))
    model = get_peft_model(model, lora).train()
    layers = model.get_decoder().layers if family != "falcon" else model.base_model.model.transformer.h
    measured = _saved_bytes_of_layer(model, layers[layer_index], batch, seq_len)
    sliding = getattr(model.config, "layer_types", [None] * len(layers))[layer_index] == "sliding_attention"
    terms = layer_saved_bytes(architecture_of(_config(model_dir)), "qlora", batch, seq_len, 8, dropout, 4, "cpu",
                              sliding)
    # Falcon's math attention also saves two int64 scalars (shapes), 16 bytes
    assert measured - sum(terms.values()) in (0, 16), terms


@pytest.mark.parametrize("family,batch,dropout", [
    ("llama2", 2, 0.0), ("llama2", 1, 0.0), ("mistral", 2, 0.1), ("falcon", 2, 0.0), ("falcon", 2, 0.1),
    ("gemma3", 2, 0.0), ("gemma3", 1, 0.0), ("gemma3", 2, 0.1),
])
def test_saved_activations_of_a_layer_match_autograd(tiny_model_dirs, family, batch, dropout):
    # the last layer (Gemma 3: a full-attention one): its input requires grad (the first's, an embedding's, does not)
    _check_saved_activations(tiny_model_dirs[family], family, -1, batch, 48, dropout)


@pytest.mark.parametrize("family", ["llama2", "gemma3"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_saved_activations_of_full_fine_tuning_match_autograd(tiny_model_dirs, family, dtype):
    """Every weight trains: the norms also keep their normalised inputs (Gemma's in fp32, Llama's in the dtype)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs[family], dtype=dtype).train()
    measured = _saved_bytes_of_layer(model, model.get_decoder().layers[-1], 2, 48)
    terms = layer_saved_bytes(architecture_of(_config(tiny_model_dirs[family])), "full", 2, 48, 8, 0.0,
                              dtype.itemsize, "cpu")
    assert measured == sum(terms.values()), terms


@pytest.fixture(scope="module")
def gemma3_three_layers(tmp_path_factory):
    """A tiny Gemma 3 whose second layer is a sliding-window one (window 8) with an input that requires grad."""
    return build_model_dir("gemma3", tmp_path_factory.mktemp("gemma3-3") / "model", layers=3)


@pytest.mark.parametrize("batch,seq_len", [(1, 48), (1, 6), (2, 48)])
def test_saved_activations_of_a_sliding_window_layer_match_autograd(gemma3_three_layers, batch, seq_len):
    """Rows as long as the window give the layer a mask even without padding; shorter rows none."""
    _check_saved_activations(gemma3_three_layers, "gemma3", 1, batch, seq_len, 0.0)


def test_four_bit_weights_are_under_a_third_of_sixteen_bit():
    for name in ("mistral-7b", "llama2-7b", "falcon-7b"):
        config = load_model_config(name)
        four = estimate(config, MemorySettings(method="inference", bits=4, seq_len=1, batch=1, rank=1)).breakdown
        sixteen = estimate(config, MemorySettings(method="inference", bits=16, seq_len=1, batch=1, rank=1)).breakdown
        assert four["weights"] + four["quant_constants"] < 0.3 * sixteen["weights"]


def test_kv_cache_matches_the_known_per_token_size():
    """Llama-2-7B keeps 0.5 MiB of K/V per token in 16-bit (2 x 32 layers x 4096 x 2 bytes);
    Falcon-7B's single K/V head keeps 71 times less than its 71 query heads would."""
    llama = estimate(load_model_config("llama2-7b"),
        MemorySettings(method="inference", bits=16, seq_len=1000, batch=1, rank=1)).breakdown["kv_cache"]
    assert llama == 1000 * 512 * 1024
    falcon = estimate(load_model_config("falcon-7b"),
        MemorySettings(method="inference", bits=16, seq_len=1000, batch=1, rank=1)).breakdown["kv_cache"]
    assert falcon == 1000 * 2 * 32 * 64 * 2


def test_checkpointing_and_batch_move_the_estimate_the_right_way():
    config = load_model_config("mistral-7b")
    with_gc = estimate(config, MemorySettings(method="qlora", bits=4, seq_len=1024, batch=4, rank=16))
    without = estimate(config,
        MemorySettings(method="qlora", bits=4, seq_len=1024, batch=4, rank=16, gradient_checkpointing=False))
    assert without.breakdown["activations"] > 10 * with_gc.breakdown["activations"]
    bigger = estimate(config, MemorySettings(method="qlora", bits=4, seq_len=1024, batch=8, rank=16))
    assert bigger.total_bytes > with_gc.total_bytes
    assert with_gc.breakdown["weights"] == bigger.breakdown["weights"]
    cpu = estimate(config, MemorySettings(method="qlora", bits=4, seq_len=1024, batch=4, rank=16, device="cpu"))
    assert "cuda_context" not in cpu.breakdown and "cuda_context" in with_gc.breakdown


def test_wrong_settings_are_reported_together():
    with pytest.raises(ValueError) as err:
        estimate(load_model_config("mistral-7b"),
            MemorySettings(method="qlora", bits=16, seq_len=0, batch=1, rank=8, optimizer="sgd"))
    message = str(err.value)
    assert "--bits 4 or 8" in message and "seq_len" in message and "adamw, paged_adamw_8bit" in message


def test_cli_prints_a_table_and_json(capsys, repo_root):
    config = str(repo_root / "training" / "memory" / "configs" / "llama2-7b.json")
    assert main(["memory", config, "--method", "qlora", "--batch", "2", "--seq-len", "512"]) == 0
    table = capsys.readouterr().out
    assert "weights" in table and "optimizer states" in table and table.strip().splitlines()[-1].startswith("total")
    assert main(["memory", config, "--json", "--device", "cpu"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total_bytes"] == sum(data["breakdown"].values())
    assert data["total_gib"] == pytest.approx(data["total_bytes"] / GIB, abs=1e-3)


def test_anchors_compare_the_families_with_published_numbers(capsys):
    assert main(["memory", "--anchors", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"unsloth", "LLaMA-Factory", "torchtune"} <= {word for row in rows for word in row["anchor"].split()}
    for row in rows:
        assert row["ratio"] == pytest.approx(row["estimate_gib"] / row["published_gib"], abs=0.01)
        assert row["why_they_differ"]


def test_an_unreachable_hub_id_asks_for_a_local_config(repo_root):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "training", "memory", "nobody-here/no-such-model"], cwd=repo_root,
                            env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "nobody-here/no-such-model" in result.stderr and "pass a local config.json" in result.stderr.lower()


@pytest.mark.parametrize("family", ["llama2", "falcon", "gemma3"])
@pytest.mark.parametrize("embeddings", ["16bit", "4bit"])
def test_weights_term_is_what_our_loader_keeps(tiny_model_dirs, family, embeddings):
    """16-bit (or NF4) embedding and head, fp32 norms, NF4 linears: the dtypes training/model/load.py loads."""
    from training.config import ModelSettings, QuantizationSettings
    from training.model.load import load_base_model

    quant = QuantizationSettings(bits=4, quant_type="nf4", double_quant=True, compute_dtype="auto",
                                 embeddings=embeddings)
    settings = ModelSettings(base_model=str(tiny_model_dirs[family]), revision=None, family=family,
                             trust_remote_code=False)
    model = load_base_model(settings, quant, True, torch.device("cpu"))
    loaded = sum(p.numel() * p.element_size() for p in model.parameters())
    expected = estimate(_config(tiny_model_dirs[family]),
        MemorySettings(method="qlora", bits=4, seq_len=8, batch=1, rank=4, device="cpu", embeddings=embeddings))
    assert expected.breakdown["weights"] == loaded


def test_checkpointed_hidden_states_of_a_4bit_model_are_fp32_under_bf16_autocast(tiny_model_dirs):
    """What gradient checkpointing keeps per layer is the residual stream: fp32 in a 4-bit model as our loader
    prepares it (the embedding's output is cast up), whatever the compute dtype; the estimate counts it so."""
    from training.config import ModelSettings, QuantizationSettings
    from training.model.load import load_base_model

    quant = QuantizationSettings(bits=4, quant_type="nf4", double_quant=True, compute_dtype="bfloat16",
                                 embeddings="16bit")
    settings = ModelSettings(base_model=str(tiny_model_dirs["gemma3"]), revision=None, family="gemma3",
                             trust_remote_code=False)
    model = load_base_model(settings, quant, True, torch.device("cpu"))
    inputs = []
    for layer in model.get_decoder().layers:
        layer.register_forward_pre_hook(lambda _module, args, kwargs: inputs.append(
            (args[0] if args else kwargs["hidden_states"]).dtype), with_kwargs=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=torch.tensor([[5, 6, 7, 8]]))
    assert inputs == [torch.float32] * len(model.get_decoder().layers)

    config = _config(tiny_model_dirs["gemma3"])

    def saved(bits, compute):
        settings = MemorySettings(method="qlora" if bits < 16 else "lora", bits=bits, seq_len=64, batch=1, rank=8,
                                  device="cpu", compute=compute)
        return estimate(config, settings).breakdown["activations"]
    assert saved(4, "bfloat16") == saved(4, "float32") and saved(16, "bfloat16") < saved(16, "float32")


LOSS_PEAK_SCRIPT = """
import json, re, sys
from pathlib import Path
import torch
import trl.trainer.utils  # imported by its backward on first use: keep that out of the measurement
from trl.kernels.chunked_logprob import ChunkedLogProbFunction
def kb(field):
    return int(re.search(field + r":\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024
torch.set_num_threads(1)
tokens, hidden, vocab = (int(v) for v in sys.argv[1:4])
weight = (torch.randn(vocab, hidden) * 0.02).to(torch.bfloat16)  # a 16-bit head, fp32 hidden states: the CPU path
states = torch.randn(tokens, hidden, requires_grad=True)
log_probs, *_ = ChunkedLogProbFunction.apply(states, weight, None, torch.randint(0, vocab, (tokens,)), 1.0, 32768,
                                             None, 1.0, ("log_probs", "entropy", "is_top1"))
loss = -log_probs.sum()
before = kb("VmRSS")
Path("/proc/self/clear_refs").write_text("5")
loss.backward()
print(json.dumps({"backward_peak": kb("VmHWM") - before}))
"""


def test_fused_loss_term_matches_trl_measured_on_the_cpu():
    """The named loss term against RSS of TRL's chunked LM head backward (torch fallback, as on our CPUs)."""
    from training.memory.loss import head_and_loss_bytes

    batch, seq_len, hidden, vocab = 4, 65, 64, 49152  # two vocabulary chunks, 256 scored positions
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", LOSS_PEAK_SCRIPT, str(batch * (seq_len - 1)), str(hidden), str(vocab)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])["backward_peak"]
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=4).to_dict()
    _, estimated, _ = head_and_loss_bytes(architecture_of(config), batch, seq_len, 4, 2, False, "cpu", "fused")
    assert estimated == pytest.approx(measured, rel=0.1)
