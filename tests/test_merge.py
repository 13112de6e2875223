"""`python -m training merge`: the merged full model computes what base + adapter computed."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from peft import PeftModel
from test_fuse import load_base, logits_of, make_adapter, relative_error
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.__main__ import main
from training.adapters.merge import MergeSettings, check_memory, merge_to_model
from training.families import FAMILIES


@pytest.fixture(scope="module")
def adapter_of(tiny_model_dirs, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("merge-adapters")
    return {
        family: make_adapter(
            base,
            root / family,
            FAMILIES[family].lora_targets,
            4,
            8,
            seed=5,
            record={
                "kind": "trained",
                "name": f"{family}-x",
                "family": family,
                "base_model": {"name_or_path": str(base)},
                "template": {"name": "T", "sha256": "0" * 64},
            },
        )
        for family, base in tiny_model_dirs.items()
    }


def base_plus_adapter_logits(base, family, adapter, nf4=False) -> torch.Tensor:
    return logits_of(PeftModel.from_pretrained(load_base(base, family, nf4), adapter))


@pytest.mark.parametrize("family", ["llama2", "falcon", "gemma3"])
def test_merged_model_equals_base_plus_adapter(family, tiny_model_dirs, adapter_of, tmp_path):
    out = merge_to_model(
        MergeSettings(adapter=adapter_of[family], out=tmp_path / "merged", dtype="float32", max_shard_size="100KB")
    )
    merged = AutoModelForCausalLM.from_pretrained(out)  # the base comes from the adapter's record
    assert (
        relative_error(logits_of(merged), base_plus_adapter_logits(tiny_model_dirs[family], family, adapter_of[family]))
        < 1e-5
    )
    assert len(list(out.glob("model-*.safetensors"))) > 1 and not list(out.glob("*.bin"))  # sharded safetensors
    assert (
        AutoTokenizer.from_pretrained(out)("Hola").input_ids
        == AutoTokenizer.from_pretrained(tiny_model_dirs[family])("Hola").input_ids
    )
    record = json.loads((out / "spanish_ft_record.json").read_text())
    assert record["kind"] == "merged" and record["family"] == family and record["template"]["sha256"] == "0" * 64
    # a model made from Gemma carries the Gemma Terms of Use notice; the others carry none
    assert (out / "NOTICE").is_file() == (family == "gemma3")


def test_bfloat16_merge_is_saved_in_bfloat16(tiny_model_dirs, adapter_of, tmp_path):
    out = merge_to_model(
        MergeSettings(adapter=adapter_of["mistral"], out=tmp_path / "merged", base=str(tiny_model_dirs["mistral"]))
    )
    merged = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert merged.dtype == torch.bfloat16
    expected = base_plus_adapter_logits(tiny_model_dirs["mistral"], "mistral", adapter_of["mistral"])
    assert relative_error(logits_of(merged.float()), expected) < 2e-2  # bf16 rounding of the weights


@pytest.mark.parametrize("family", ["mistral", "falcon"])
def test_dequantized_nf4_merge_matches_the_4bit_base(family, tiny_model_dirs, adapter_of, tmp_path):
    base, adapter = tiny_model_dirs[family], adapter_of[family]
    trained_against = base_plus_adapter_logits(base, family, adapter, nf4=True)
    nf4 = merge_to_model(MergeSettings(adapter=adapter, out=tmp_path / "nf4", dtype="float32", dequantized_nf4=True))
    plain = merge_to_model(MergeSettings(adapter=adapter, out=tmp_path / "plain", dtype="float32"))
    assert relative_error(logits_of(AutoModelForCausalLM.from_pretrained(nf4)), trained_against) < 1e-5
    assert relative_error(logits_of(AutoModelForCausalLM.from_pretrained(plain)), trained_against) > 1e-2


def test_quantized_base_and_4bit_merge_are_refused(tiny_model_dirs, adapter_of, tmp_path, capsys):
    quantized = tmp_path / "quantized-base"
    shutil.copytree(tiny_model_dirs["llama2"], quantized)
    config = json.loads((quantized / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    (quantized / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"quantised \(bitsandbytes\).*16-bit original"):
        merge_to_model(MergeSettings(adapter=adapter_of["llama2"], out=tmp_path / "out", base=str(quantized)))
    assert main(["merge", str(adapter_of["llama2"]), "--out", str(tmp_path / "out"), "--load-in-4bit"]) == 1
    assert "never loads the base in 4 bits" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_memory_check():
    check_memory(needed_bytes=10, available_bytes=11, force=False)
    check_memory(needed_bytes=12, available_bytes=11, force=True)
    with pytest.raises(ValueError, match=r"needs at least 2.0 GiB of RAM but only 1.0 GiB.*--force"):
        check_memory(needed_bytes=2 * 1024**3, available_bytes=1024**3, force=False)


def test_cli_reports_memory_and_refuses_pickle(tiny_model_dirs, adapter_of, tmp_path, capsys):
    assert main(["merge", str(adapter_of["falcon"]), "--out", str(tmp_path / "m"), "--dtype", "float16"]) == 0
    assert "GiB needed (float16 base + adapter)" in capsys.readouterr().out
    pickled = tmp_path / "pickled"
    shutil.copytree(adapter_of["falcon"], pickled)
    from safetensors.torch import load_file

    torch.save(load_file(pickled / "adapter_model.safetensors"), pickled / "adapter_model.bin")
    (pickled / "adapter_model.safetensors").unlink()
    assert main(["merge", str(pickled), "--out", str(tmp_path / "p")]) == 1
    assert "--allow-pickle" in capsys.readouterr().err and not (tmp_path / "p").exists()
