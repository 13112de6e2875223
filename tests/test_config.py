"""Recipes: every shipped recipe validates; mistakes are all reported with key paths; overrides work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from training.config import ConfigError, load_config
from training.families import FAMILIES, SEVEN_B_FAMILIES, family_of_model_type

ALL_RECIPES = sorted((Path(__file__).resolve().parents[1] / "training" / "recipes").glob("*.yaml"))
RECIPES = [p for p in ALL_RECIPES if p.stem.split("-", 1)[0] in SEVEN_B_FAMILIES]  # the 7B family x task recipes
DEMO_RECIPES = [p for p in ALL_RECIPES if p.stem.startswith("demo-")]
BASE_MODELS = {
    "mistral": "mistralai/Mistral-7B-v0.1",
    "llama2": "meta-llama/Llama-2-7b-chat-hf",
    "falcon": "tiiuae/falcon-7b",
}


def write_recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = "base_model: some/model\nfamily: falcon\ndataset: {train: data/nowhere.jsonl}\noutput_dir: out/adapter\n"


def test_one_recipe_per_family_and_task():
    names = {path.stem for path in RECIPES}
    assert names == {f"{family}-{task}" for family in SEVEN_B_FAMILIES for task in ("instrucciones", "leyes-ec")}
    demo_families = {name for name, family in FAMILIES.items() if family.demo}
    assert {p.stem for p in DEMO_RECIPES} >= {f"demo-{family}-{task}" for family in demo_families
                                              for task in ("instrucciones", "leyes-ec")}


@pytest.mark.parametrize("path", ALL_RECIPES, ids=lambda p: p.stem)
def test_every_recipe_in_the_folder_validates(path):
    assert load_config(path).model.family in FAMILIES


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_validates_and_documents_its_launch(path, repo_root):
    config = load_config(path)  # the dataset files need not exist to validate
    family, task = path.stem.split("-", 1)
    assert (config.model.family, config.task, config.name) == (family, task, path.stem)
    assert config.model.base_model == BASE_MODELS[family]
    assert config.model.trust_remote_code is False
    assert config.template == FAMILIES[family].template_file and (repo_root / config.template).is_file()
    assert (
        config.data.train
        == f"training/datasets/{'instrucciones-es' if task == 'instrucciones' else 'leyes-ec'}/train.jsonl"
    )
    assert config.lora.target_modules == FAMILIES[family].lora_targets
    header = path.read_text(encoding="utf-8").split("\nname:")[0]
    assert f"python -m training train training/recipes/{path.stem}.yaml" in header
    assert "GPU memory" in header and "GB" in header


def test_three_mistakes_are_reported_at_once_with_key_paths(tmp_path):
    recipe = write_recipe(
        tmp_path,
        "base_model: x\nfamily: gpt2\ndataset: {train: a.jsonl, formt: alpaca}\nlora: {rank: x}\noutput_dir: out\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(recipe)
    errors = caught.value.errors
    assert len(errors) == 3
    assert "lora.rank: 'x' is not of type 'integer'" in errors
    assert any(e.startswith("family: 'gpt2' is not one of") for e in errors)
    assert any(e.startswith("dataset.formt: unknown key") for e in errors)
    assert str(recipe) in str(caught.value)


def test_missing_required_keys_are_named(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(write_recipe(tmp_path, "family: mistral\ndataset: {}\n"))
    assert set(caught.value.errors) == {
        "base_model: required key is missing",
        "output_dir: required key is missing",
        "dataset.train: required key is missing",
    }


def test_overrides_parse_yaml_values(tmp_path):
    recipe = write_recipe(tmp_path, MINIMAL)
    config = load_config(
        recipe,
        [
            "dataset.train=data/mine.jsonl",
            "lora.rank=8",
            "training.gradient_checkpointing=false",
            "training.max_steps=null",
            "lora.target_modules=[query_key_value, dense]",
            "quantization.bits=16",
        ],
    )
    assert config.data.train == "data/mine.jsonl"
    assert config.lora.rank == 8 and config.lora.target_modules == ("query_key_value", "dense")
    assert config.training.gradient_checkpointing is False and config.training.max_steps is None
    assert config.quantization.bits == 16


def test_unknown_or_malformed_override_is_named(tmp_path):
    recipe = write_recipe(tmp_path, MINIMAL)
    with pytest.raises(ConfigError) as caught:
        load_config(recipe, ["lora.rnk=8", "training", "lora.rank=eight"])
    errors = caught.value.errors
    assert any("'lora.rnk=8'" in e and "unknown key 'lora.rnk'" in e and "rank" in e for e in errors)
    assert any("'training'" in e and "KEY.PATH=VALUE" in e for e in errors)
    assert "lora.rank: 'eight' is not of type 'integer'" in errors


def test_defaults_come_from_schema_and_family(tmp_path):
    config = load_config(write_recipe(tmp_path, MINIMAL))
    falcon = FAMILIES["falcon"]
    assert (config.template, config.preset, config.lora.target_modules) == (
        falcon.template_file,
        falcon.preset,
        falcon.lora_targets,
    )
    assert (config.quantization.bits, config.quantization.quant_type, config.quantization.double_quant) == (
        4,
        "nf4",
        True,
    )
    assert config.data.on_error == "raise" and config.data.format == "alpaca"
    assert config.name == "adapter" and config.work_dir == Path("out/adapter.work")
    assert config.as_dict()["lora"]["target_modules"] == list(falcon.lora_targets)


def test_rules_across_keys(tmp_path):
    recipe = write_recipe(
        tmp_path, MINIMAL + "training: {early_stopping_patience: 2, eval_steps: 10, save_steps: 15}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(recipe)
    assert any(e.startswith("training.early_stopping_patience: needs evaluation data") for e in caught.value.errors)
    assert any(e.startswith("training.save_steps: must be a multiple") for e in caught.value.errors)


def test_packing_is_auto_by_default_and_can_be_forced_either_way(tmp_path):
    recipe = write_recipe(tmp_path, MINIMAL)
    assert load_config(recipe).training.packing == "auto"
    assert load_config(recipe).as_dict()["training"]["packing"] == "auto"  # recorded with the adapter
    assert load_config(recipe, ["training.packing=false"]).training.packing is False
    assert load_config(recipe, ["training.packing=true"]).training.packing is True
    with pytest.raises(ConfigError) as caught:
        load_config(recipe, ["training.packing=sometimes"])
    assert caught.value.errors == ["training.packing: 'sometimes' is not one of ['auto', True, False]"]


def test_families_table():
    assert family_of_model_type("llama") == "llama2"
    assert family_of_model_type("falcon") == family_of_model_type("RefinedWebModel") == "falcon"
    assert family_of_model_type("gpt2") is None
    assert all(
        yaml.safe_load((Path(__file__).resolve().parents[1] / f.template_file).read_text()) for f in FAMILIES.values()
    )


def test_help_explains_keys_and_overrides(repo_root):
    result = subprocess.run(
        [sys.executable, "-m", "training", "train", "--help"], cwd=repo_root, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for text in (
        "KEY.PATH=VALUE",
        "lora.rank=8",
        "dataset.on_error",
        "quantization.bits",
        "training.early_stopping_patience",
        "training.packing (auto|True|False; default \"auto\")",
    ):
        assert text in result.stdout


@pytest.mark.parametrize("name, kind", [("ddp.yaml", "MULTI_GPU"), ("fsdp-qlora.yaml", "FSDP")])
def test_accelerate_configs_load(name, kind, repo_root):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(repo_root / "training" / "accelerate" / name))
    assert config.distributed_type.value == kind and config.mixed_precision == "no"


def test_the_cli_drops_bitsandbytes_hub_kernel_notice_only(capsys, caplog):
    """bitsandbytes >= 0.50 warns on import that it could not fetch a Hub kernel (proposing
    trust_remote_code); the command line drops that one notice and nothing else of its logger."""
    import logging

    from training.__main__ import main

    assert main([]) == 2  # help, and the filter installed
    capsys.readouterr()
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING, logger=logger.name):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s.", "no network")
        logger.warning("another bitsandbytes warning")
    assert [record.getMessage() for record in caplog.records] == ["another bitsandbytes warning"]
