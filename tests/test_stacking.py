"""Training on top of a frozen adapter (`lora.stack_on`) and replayed rows (`dataset.replay`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import Capture, make_config

from training.adapters.fuse import FuseSettings, fuse_adapters
from training.adapters.record import read_record
from training.config import ConfigError
from training.model.load import load_base_model
from training.model.stacking import stack_frozen_adapter
from training.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def two_tasks(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tasks")
    first, second = folder / "first.jsonl", folder / "second.jsonl"
    with open(first, "w", encoding="utf-8") as handle:
        for i in range(24):
            row = {"instruction": f"Calcula {i} más 1.", "output": f"El resultado es {i + 1}."}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    with open(second, "w", encoding="utf-8") as handle:
        for i in range(24):
            row = {"instruction": "¿Qué protege el artículo 71?", "input": f"Caso {i}.",
                   "output": "Según el artículo 71 de la Constitución, la naturaleza."}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return first, second


def test_stacked_adapter_fused_with_its_base_adapter_is_exactly_the_trained_model(tiny_model_dirs, two_tasks, tmp_path):
    first, second = two_tasks
    model_dir = tiny_model_dirs["llama2"]
    under = train(make_config(tmp_path / "a", "llama2", model_dir, first, "training.max_steps=4"))
    capture = Capture()
    config = make_config(
        tmp_path / "b", "llama2", model_dir, second, "training.max_steps=4",
        f"lora.stack_on={under}", f"dataset.replay={{train: {first}, rows: 5}}",
    )
    top = train(config, callbacks=[capture])

    record = read_record(top).data
    assert record["stacked_on"]["path"] == str(under) and record["stacked_on"]["modules"] > 0
    assert record["dataset"]["replay"]["rows"] == 5 and record["dataset"]["rows_kept"] == 24 + 5
    assert "on top of the frozen adapter" in (top / "README.md").read_text(encoding="utf-8")
    # the new adapter holds only its own weights, and they were trained
    tensors = load_file(top / "adapter_model.safetensors")
    assert tensors.keys() == load_file(under / "adapter_model.safetensors").keys()
    assert any("lora_B" in key and tensors[key].abs().sum() > 0 for key in tensors)

    fused = fuse_adapters(FuseSettings(adapters=[under, top], out=tmp_path / "fused", name="fused")).out_dir
    from peft import PeftModel

    reloaded = PeftModel.from_pretrained(load_base_model(config.model, config.quantization, False, CPU), fused)
    ids = torch.tensor([[1, 5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        trained = capture.model.eval()(input_ids=ids).logits
        got = reloaded.eval()(input_ids=ids).logits
        alone = PeftModel.from_pretrained(load_base_model(config.model, config.quantization, False, CPU), top)
        without_under = alone.eval()(input_ids=ids).logits
    torch.testing.assert_close(got, trained, atol=1e-4, rtol=1e-4)
    assert (without_under - trained).abs().max() > 1e-3  # the frozen adapter really took part


def test_stacking_refuses_a_missing_pickled_or_foreign_adapter(tiny_model_dirs, two_tasks, tmp_path):
    from peft import LoraConfig, get_peft_model
    from tiny import build_model_dir
    from transformers import AutoModelForCausalLM

    narrow = AutoModelForCausalLM.from_pretrained(build_model_dir("llama2", tmp_path / "narrow", hidden=32))
    foreign = tmp_path / "foreign"
    get_peft_model(narrow, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(foreign)
    config = make_config(tmp_path / "l", "llama2", tiny_model_dirs["llama2"], two_tasks[0])
    base = load_base_model(config.model, config.quantization, False, CPU)
    with pytest.raises(ValueError, match="no such adapter folder"):
        stack_frozen_adapter(base, tmp_path / "nowhere")
    with pytest.raises(ValueError, match="q_proj' is 64 -> 64 in this base model but 32 -> 32"):
        stack_frozen_adapter(base, foreign)
    (foreign / "adapter_model.safetensors").unlink()
    (foreign / "adapter_model.bin").write_bytes(b"never unpickled")
    with pytest.raises(ValueError, match="pickle"):
        stack_frozen_adapter(base, foreign)


def test_stack_on_and_replay_are_checked_in_the_recipe(tiny_model_dirs, two_tasks, tmp_path):
    first, _ = two_tasks
    with pytest.raises(ConfigError, match="dataset.replay.rows: required key is missing"):
        make_config(tmp_path, "llama2", tiny_model_dirs["llama2"], first, f"dataset.replay={{train: {first}}}")
    with pytest.raises(ConfigError, match="lora.stack_on: must differ from output_dir"):
        make_config(tmp_path, "llama2", tiny_model_dirs["llama2"], first, f"lora.stack_on={tmp_path / 'adapter'}")
