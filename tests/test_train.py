"""End to end on tiny models: real NF4 training, the adapter folder, resume, and DDP on the CPU."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

from training.adapters.folder import read_adapter_config
from training.adapters.record import read_record
from training.config import load_config
from training.families import FAMILIES
from training.files import sha256_file
from training.model.load import load_base_model
from training.templates import load_template
from training.train import checkpoint_to_resume, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

QUESTIONS = [
    ("¿Cuál es la capital de Ecuador?", "La capital de Ecuador es Quito."),
    ("Calcula 12 más 30.", "El resultado es 42."),
    ("Traduce al español: The weather is nice today.", "El clima está agradable hoy."),
    ("Clasifica el sentimiento: me encanta.", "positivo."),
    ("Resume el artículo 71 de la Constitución.", "La naturaleza tiene derecho a que se respete su existencia."),
]
FAST = [
    # float32: these tests compare trained and reloaded models to 1e-4; `auto` would pick bf16 autocast on CPUs
    # with native bf16 (test_bf16_autocast_trains_on_the_cpu covers that path)
    "quantization.compute_dtype=float32",
    "training.batch_size=4",
    "training.grad_accumulation=1",
    "training.learning_rate=0.003",
    "training.scheduler=constant",
    "training.warmup_ratio=0",
    "training.logging_steps=1",
    "lora.rank=8",
    "training.report_to=none",
]


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(40):
            question, answer = QUESTIONS[i % len(QUESTIONS)]
            row = {
                "id": i,
                "instruction": question,
                "input": "" if i % 2 else "Responde en una frase.",
                "output": answer,
                "category": "prueba",
                "fuente": "tests",
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def make_config(tmp_path: Path, family: str, model_dir: Path, train_file: Path, *overrides: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "name": f"tiny-{family}",
                "task": "instrucciones",
                "family": family,
                "base_model": str(model_dir),
                "dataset": {"train": str(train_file), "max_tokens": 256},
                "output_dir": str(tmp_path / "adapter"),
            }
        ),
        encoding="utf-8",
    )
    return load_config(recipe, [*FAST, *overrides])


class Capture(TrainerCallback):
    """Keeps the weights before training and the trained model itself."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {name: p.detach().clone() for name, p in model.named_parameters()}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.model = model


@pytest.mark.parametrize("family", ["llama2", "mistral", "falcon", "gemma3"])
def test_nf4_training_changes_only_lora_and_the_adapter_reloads_exactly(family, tiny_model_dirs, train_file, tmp_path):
    config = make_config(
        tmp_path,
        family,
        tiny_model_dirs[family],
        train_file,
        "training.max_steps=8",
        "dataset.eval_fraction=0.1",
        "training.eval_steps=4",
        "training.save_steps=4",
        "training.report_to=tensorboard",
    )
    capture = Capture()
    output = train(config, callbacks=[capture])

    record = read_record(output).data
    metrics = record["metrics"]
    assert metrics["train_loss"] < metrics["train_loss_first"] - 0.05, metrics
    assert metrics["eval_loss"] is not None and metrics["steps"] == 8 and metrics["tokens_trained"] > 0
    after = dict(capture.model.named_parameters())
    changed = {name for name, before in capture.before.items() if not torch.equal(before, after[name])}
    assert changed and all("lora_" in name for name in changed)  # the base stayed frozen
    assert any("lora_B" in name for name in changed)

    tensors = load_file(output / "adapter_model.safetensors")
    assert tensors and all("lora_A" in key or "lora_B" in key for key in tensors)
    assert set(read_adapter_config(output)["target_modules"]) == set(FAMILIES[family].lora_targets)
    assert {p.name for p in output.iterdir()} == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "spanish_ft_record.json",
        "README.md",
        "loss.png",
        *(["NOTICE"] if family == "gemma3" else []),  # the Gemma Terms of Use travel with everything made from Gemma
    }
    if family == "gemma3":
        assert "Gemma Terms of Use" in (output / "NOTICE").read_text() in (output / "README.md").read_text()
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.stat().st_mode & 0o777 for p in output.iterdir()}
    assert (output.stat().st_mode & 0o777, modes) == (0o777 & ~umask, {0o666 & ~umask})  # not private to us
    assert record["base_shape"]["model_type"] == capture.model.config.model_type
    template_file = Path(__file__).resolve().parents[1] / FAMILIES[family].template_file
    assert record["template"]["sha256"] == load_template(template_file).sha256
    assert record["dataset"]["sha256"] == sha256_file(train_file)
    assert record["dataset"]["rows_kept"] + record["dataset"]["rows_eval"] == 40
    assert record["config"]["lora"]["rank"] == 8 and record["libraries"]["peft"]
    assert "# tiny-" + family in (output / "README.md").read_text(encoding="utf-8")
    assert not list(config.work_dir.glob("checkpoint-*"))  # checkpoints dropped once the adapter is safe
    assert list((config.work_dir / "runs").glob("*/events.out.tfevents.*"))  # TensorBoard logs stay

    from peft import PeftModel

    reloaded = PeftModel.from_pretrained(
        load_base_model(config.model, config.quantization, False, torch.device("cpu")), output
    )
    ids = torch.tensor([[1, 5, 17, 42, 99, 7, 3]]) if family != "falcon" else torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        expected = capture.model.eval()(input_ids=ids).logits
        got = reloaded.eval()(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_resume_needs_a_checkpoint_and_a_fresh_run_refuses_old_ones(tiny_model_dirs, train_file, tmp_path):
    config = make_config(tmp_path, "mistral", tiny_model_dirs["mistral"], train_file, "resume=true")
    with pytest.raises(ValueError, match="has no checkpoint-"):
        checkpoint_to_resume(config)
    (config.work_dir / "checkpoint-7").mkdir(parents=True)
    assert checkpoint_to_resume(config) == str(config.work_dir / "checkpoint-7")
    fresh = make_config(tmp_path, "mistral", tiny_model_dirs["mistral"], train_file)
    with pytest.raises(ValueError, match="checkpoint-7.*resume=true"):
        checkpoint_to_resume(fresh)


class InterruptAfterSave(TrainerCallback):
    """Stops training like Ctrl-C right after the checkpoint of `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_after_interruption_matches_an_uninterrupted_run(tiny_model_dirs, train_file, tmp_path):
    steps = [
        "training.max_steps=6",
        "training.save_steps=3",
        "training.scheduler=linear",
        "lora.dropout=0.1",
        "training.keep_checkpoints=true",
    ]
    straight = train(make_config(tmp_path / "straight", "mistral", tiny_model_dirs["mistral"], train_file, *steps))

    resumed = make_config(tmp_path / "resumed", "mistral", tiny_model_dirs["mistral"], train_file, *steps)
    with pytest.raises(KeyboardInterrupt):
        train(resumed, callbacks=[InterruptAfterSave(3)])
    assert not resumed.output_dir.exists()  # no half adapter
    assert (resumed.work_dir / "checkpoint-3" / "optimizer.pt").is_file()
    with pytest.raises(ValueError, match="continue it with resume=true"):
        train(resumed)
    resumed_output = train(
        make_config(tmp_path / "resumed", "mistral", tiny_model_dirs["mistral"], train_file, *steps, "resume=true")
    )

    expected, got = (
        load_file(straight / "adapter_model.safetensors"),
        load_file(resumed_output / "adapter_model.safetensors"),
    )
    assert expected.keys() == got.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], atol=1e-6, rtol=1e-5)
    assert read_record(resumed_output).data["metrics"]["steps"] == 6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_on_cpu_through_the_cli(tiny_model_dirs, train_file, tmp_path, repo_root):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {
                "family": "falcon",
                "base_model": str(tiny_model_dirs["falcon"]),
                "dataset": {"train": str(train_file)},
                "output_dir": str(tmp_path / "ddp-adapter"),
            }
        ),
        encoding="utf-8",
    )
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        "-m",
        "training",
        "train",
        str(recipe),
        *FAST,
        "training.max_steps=3",
    ]
    result = subprocess.run(
        command, cwd=repo_root, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("adapter written to") == 1  # one voice for two processes
    assert "tok/s" in result.stderr  # the progress bar
    metrics = read_record(tmp_path / "ddp-adapter").data["metrics"]
    # 40 rows, 4 per process and step: two processes cover an epoch in 5 steps, one would need 10
    assert metrics["epochs"] == pytest.approx(3 / 5, abs=0.01)


def test_save_dtype_bfloat16_halves_the_adapter_and_still_reloads(tiny_model_dirs, train_file, tmp_path):
    config = make_config(tmp_path, "llama2", tiny_model_dirs["llama2"], train_file, "training.max_steps=2",
                         "lora.save_dtype=bfloat16")
    capture = Capture()
    output = train(config, callbacks=[capture])
    tensors = load_file(output / "adapter_model.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    trained = {k: v for k, v in capture.model.state_dict().items() if "lora_" in k}
    assert sum(t.numel() for t in tensors.values()) == sum(t.numel() for t in trained.values())
    assert read_record(output).data["config"]["lora"]["save_dtype"] == "bfloat16"
    from peft import PeftModel

    reloaded = PeftModel.from_pretrained(
        load_base_model(config.model, config.quantization, False, torch.device("cpu")), output
    )
    ids = torch.tensor([[1, 5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        expected = capture.model.eval()(input_ids=ids).logits
        got = reloaded.eval()(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=2e-2, rtol=2e-2)  # bf16 rounding of the LoRA factors


@pytest.mark.parametrize("bits", [4, 16])
def test_bf16_autocast_trains_on_the_cpu(bits, tiny_model_dirs, train_file, tmp_path):
    """compute_dtype bfloat16 on the CPU (what `auto` picks where the CPU has AMX/AVX512-BF16): the trainer
    autocasts, the 4-bit compute dtype follows, the LoRA weights stay float32, and the loss goes down."""
    config = make_config(tmp_path, "llama2", tiny_model_dirs["llama2"], train_file, "training.max_steps=8",
                         "quantization.compute_dtype=bfloat16", f"quantization.bits={bits}")
    capture = Capture()
    output = train(config, callbacks=[capture])
    metrics = read_record(output).data["metrics"]
    assert metrics["train_loss"] < metrics["train_loss_first"] - 0.05, metrics
    lora = {n: p for n, p in capture.model.named_parameters() if p.requires_grad}
    assert lora and {p.dtype for p in lora.values()} == {torch.float32}
    linear = capture.model.get_submodule("base_model.model.model.layers.0.self_attn.q_proj").base_layer
    if bits == 4:
        assert linear.compute_dtype == torch.bfloat16
    else:
        assert linear.weight.dtype == torch.bfloat16  # frozen 16-bit base in bf16: no fp32 copy, no per-step cast
    assert {t.dtype for t in load_file(output / "adapter_model.safetensors").values()} == {torch.float32}


def test_gradient_checkpointing_auto_follows_the_estimate_against_free_memory(tiny_model_dirs, train_file, tmp_path):
    from training.model.checkpointing import decide_checkpointing, peak_without_checkpointing

    cpu = torch.device("cpu")
    config = make_config(tmp_path, "llama2", tiny_model_dirs["llama2"], train_file,
                         "training.gradient_checkpointing=auto", "quantization.bits=16")
    peak = peak_without_checkpointing(config, 256, 0.4, torch.float32, cpu)
    assert 0 < peak < 2 * 1024**3  # a tiny model
    roomy = decide_checkpointing(config, 256, 0.4, torch.float32, cpu, free_bytes=10 * peak)
    tight = decide_checkpointing(config, 256, 0.4, torch.float32, cpu, free_bytes=peak)
    assert not roomy.enabled and "off" in roomy.note and "GiB free on cpu" in roomy.note
    assert tight.enabled and "to fit" in tight.note
    # a 4-bit base (QLoRA) keeps it on however much memory is free: off would spend more than 4 bits save
    qlora = make_config(tmp_path / "q", "llama2", tiny_model_dirs["llama2"], train_file,
                        "training.gradient_checkpointing=auto", "quantization.bits=4")
    kept = decide_checkpointing(qlora, 256, 0.4, torch.float32, cpu, free_bytes=1000 * peak)
    assert kept.enabled and "4-bit base" in kept.note and "training.gradient_checkpointing=false" in kept.note
    # a longer row or a bigger batch needs more: the estimate is the run's own
    assert peak_without_checkpointing(config, 1024, 0.4, torch.float32, cpu) > peak
    forced = make_config(tmp_path / "f", "llama2", tiny_model_dirs["llama2"], train_file,
                         "training.gradient_checkpointing=true")
    assert decide_checkpointing(forced, 256, 0.4, torch.float32, cpu, free_bytes=10 * peak).enabled
    # through train(): the decision is logged in the record's metrics
    output = train(make_config(tmp_path / "t", "llama2", tiny_model_dirs["llama2"], train_file,
                               "training.max_steps=1", "training.gradient_checkpointing=auto", "quantization.bits=16"))
    assert read_record(output).data["metrics"]["gradient_checkpointing"] is False  # 24 GiB hold a tiny model
