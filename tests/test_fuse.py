"""`python -m training fuse`: the fused adapter acts like its sources, all active at once.

Reference: PEFT itself with every source loaded as its own adapter, all active together
(`base_model.set_adapter([...])`), each scaled by its weight with PEFT 0.18's per-layer
`LoraLayer.set_scale(adapter, weight)` (scaling = weight * alpha / r, rsLoRA-aware).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from training.__main__ import main
from training.adapters.fuse import FuseSettings, fuse_adapters
from training.families import FAMILIES

FAMILY_NAMES = tuple(FAMILIES)


def subset_targets(family: str) -> list[str]:
    return list(FAMILIES[family].lora_targets[:1]) + (["v_proj"] if family != "falcon" else [])


def make_adapter(
    base: Path, out: Path, targets, r: int, alpha: float, seed: int, record: dict | None = None, **options
) -> Path:
    """A saved PEFT LoRA adapter with random (non-zero) A and B."""
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), **options))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    peft_model.save_pretrained(out, save_embedding_layers=False)
    if record is not None:
        (out / "spanish_ft_record.json").write_text(json.dumps(record))
    return out


@contextmanager
def linear_subclasses_as_nn_linear(family: str):
    """Build Falcon's FalconLinear as nn.Linear, so transformers' bitsandbytes swap quantises it."""
    import importlib

    patched = []
    for spec in FAMILIES[family].linear_subclasses:
        module_name, class_name = spec.split(":")
        module = importlib.import_module(module_name)
        patched.append((module, class_name, getattr(module, class_name)))
        setattr(module, class_name, torch.nn.Linear)
    try:
        yield
    finally:
        for module, class_name, original in patched:
            setattr(module, class_name, original)


def load_base(base: Path, family: str, nf4: bool = False):
    if not nf4:
        return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    import bitsandbytes as bnb

    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.float32,
    )
    with linear_subclasses_as_nn_linear(family):
        model = AutoModelForCausalLM.from_pretrained(
            base, dtype=torch.float32, quantization_config=quantization, device_map="cpu"
        )
    targets = [m for n, m in model.named_modules() if n.rsplit(".", 1)[-1] in FAMILIES[family].lora_targets]
    assert targets and all(isinstance(m, bnb.nn.Linear4bit) for m in targets)
    for module in targets:  # on AVX512-BF16 CPUs bnb's fast path rounds activations to bf16; compare in fp32
        module.support_avx512bf16_for_cpu = False
    return model


def input_ids(vocab_size: int = 300) -> torch.Tensor:
    return torch.randint(3, vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))


def logits_of(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids()).logits


def logits_all_active(base, family, adapters: list[tuple[Path, float]], nf4=False) -> torch.Tensor:
    names = [f"source{i}" for i in range(len(adapters))]
    model = PeftModel.from_pretrained(load_base(base, family, nf4), adapters[0][0], adapter_name=names[0])
    for name, (path, _) in zip(names[1:], adapters[1:], strict=True):
        model.load_adapter(path, adapter_name=name)
    model.base_model.set_adapter(names)
    for layer in model.modules():
        if isinstance(layer, LoraLayer):
            for name, (_, weight) in zip(names, adapters, strict=True):
                layer.set_scale(name, weight)
    return logits_of(model)


def fused_model(base, family, fused: Path, nf4=False):
    return PeftModel.from_pretrained(load_base(base, family, nf4), fused, adapter_name=fused.name)


def relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    return float((x - reference).norm() / reference.norm())


@pytest.fixture(scope="module")
def adapters(tiny_model_dirs, tmp_path_factory) -> dict:
    """Per family: `a` (r=4, alpha 8), `b` (r=8, alpha 32, rsLoRA), `few` (r=2, fewer targets)."""
    root = tmp_path_factory.mktemp("adapters")
    out = {}
    for family, base in tiny_model_dirs.items():
        all_targets = FAMILIES[family].lora_targets
        record = {
            "kind": "trained",
            "family": family,
            "base_model": {"name_or_path": str(base)},
            "template": {"name": "T", "sha256": "1" * 64},
            "preset": "P",
        }
        out[family] = {
            "a": make_adapter(base, root / f"{family}-a", all_targets, 4, 8, seed=1, record={**record, "name": "a"}),
            "b": make_adapter(base, root / f"{family}-b", all_targets, 8, 32, seed=2, use_rslora=True),
            "few": make_adapter(base, root / f"{family}-few", subset_targets(family), 2, 4, seed=3),
        }
    return out


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_cat_of_different_ranks_equals_both_adapters_active(family, tiny_model_dirs, adapters, tmp_path):
    base, a, b = tiny_model_dirs[family], adapters[family]["a"], adapters[family]["b"]
    result = fuse_adapters(FuseSettings(adapters=[a, b], out=tmp_path / "fused", weights=[0.7, -0.4]))
    expected = logits_all_active(base, family, [(a, 0.7), (b, -0.4)])
    model = fused_model(base, family, result.out_dir)
    assert relative_error(logits_of(model), expected) < 1e-5
    assert relative_error(logits_of(load_base(base, family)), expected) > 0.05  # the adapters matter
    ranks = {layer.r[result.out_dir.name] for layer in model.modules() if isinstance(layer, LoraLayer)}
    assert result.rank == 12 and ranks == {12}
    # a fused Gemma adapter carries the Gemma Terms of Use notice (family from the sources' records)
    notice = result.out_dir / "NOTICE"
    assert notice.is_file() == (family == "gemma3") and (family != "gemma3" or "Gemma Terms" in notice.read_text())


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_cat_of_different_target_modules_keeps_each_delta(family, tiny_model_dirs, adapters, tmp_path):
    base, few, b = tiny_model_dirs[family], adapters[family]["few"], adapters[family]["b"]
    result = fuse_adapters(FuseSettings(adapters=[few, b], out=tmp_path / "fused"))
    expected = logits_all_active(base, family, [(few, 1.0), (b, 1.0)])
    model = fused_model(base, family, result.out_dir)
    assert relative_error(logits_of(model), expected) < 1e-5
    # rank_pattern gives the modules both adapters touch rank 2 + 8; the others keep b's 8
    ranks = {
        name.split(".")[-1]: layer.r["fused"] for name, layer in model.named_modules() if isinstance(layer, LoraLayer)
    }
    assert ranks == {t: 10 if t in subset_targets(family) else 8 for t in FAMILIES[family].lora_targets}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_cat_on_nf4_base_equals_both_adapters_active(family, tiny_model_dirs, adapters, tmp_path):
    base, a, few = tiny_model_dirs[family], adapters[family]["a"], adapters[family]["few"]
    result = fuse_adapters(FuseSettings(adapters=[a, few], out=tmp_path / "fused", weights=[1.0, 0.5]))
    expected = logits_all_active(base, family, [(a, 1.0), (few, 0.5)], nf4=True)
    assert relative_error(logits_of(fused_model(base, family, result.out_dir, nf4=True)), expected) < 1e-5


def merged_deltas(base: Path, family: str, adapter: Path, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """{module: W_merged - W_base}, computed by PEFT's own merge."""
    model = PeftModel.from_pretrained(load_base(base, family), adapter, adapter_name="x")
    deltas = {}
    for name, layer in model.named_modules():
        if isinstance(layer, LoraLayer):
            layer.set_scale("x", scale)
            before = layer.get_base_layer().weight.detach().clone()
            layer.merge()
            deltas[name] = layer.get_base_layer().weight.detach() - before
    return deltas


def assert_deltas_close(got: dict, expected: dict, tolerance: float = 1e-5) -> None:
    assert got.keys() == expected.keys()
    for name in got:
        assert relative_error(got[name], expected[name]) < tolerance, name


@pytest.mark.parametrize(
    "weights, reference",
    [((0.5, 0.5), ("a", 1.0)), ((1.0, 0.0), ("a", 1.0)), ((-1.0, -1.0), ("a", -2.0))],
    ids=["half-half-of-same", "one-zero", "negative"],
)
def test_weights(weights, reference, tiny_model_dirs, adapters, tmp_path):
    base, a, b = tiny_model_dirs["llama2"], adapters["llama2"]["a"], adapters["llama2"]["b"]
    second = a if weights != (1.0, 0.0) else b  # 1/0 fuses a with a different adapter that must vanish
    fused = fuse_adapters(FuseSettings(adapters=[a, second], out=tmp_path / "fused", weights=list(weights))).out_dir
    assert_deltas_close(merged_deltas(base, "llama2", fused), merged_deltas(base, "llama2", a, reference[1]))


def test_svd_at_full_rank_reproduces_cat(tiny_model_dirs, adapters, tmp_path):
    base, a, b = tiny_model_dirs["mistral"], adapters["mistral"]["a"], adapters["mistral"]["b"]
    cat = fuse_adapters(FuseSettings(adapters=[a, b], out=tmp_path / "cat", weights=[1.0, 0.6]))
    svd = fuse_adapters(FuseSettings(adapters=[a, b], out=tmp_path / "svd", weights=[1.0, 0.6], method="svd", rank=12))
    assert svd.rank == 12 and svd.overall_error < 1e-6
    assert_deltas_close(merged_deltas(base, "mistral", svd.out_dir), merged_deltas(base, "mistral", cat.out_dir), 1e-5)


def test_svd_at_low_rank_reports_the_measured_error(tiny_model_dirs, adapters, tmp_path):
    base, a, b = tiny_model_dirs["falcon"], adapters["falcon"]["a"], adapters["falcon"]["b"]
    exact = merged_deltas(base, "falcon", fuse_adapters(FuseSettings(adapters=[a, b], out=tmp_path / "cat")).out_dir)
    result = fuse_adapters(FuseSettings(adapters=[a, b], out=tmp_path / "svd", method="svd", rank=3))
    approx = merged_deltas(base, "falcon", result.out_dir)
    measured = {name.removeprefix("base_model.model."): relative_error(approx[name], exact[name]) for name in exact}
    assert result.module_errors.keys() == measured.keys()
    for name, error in measured.items():
        assert 0.05 < error and result.module_errors[name] == pytest.approx(error, rel=1e-3)
    dropped = sum(float((approx[n] - exact[n]).square().sum()) for n in exact)
    overall = (dropped / sum(float(d.square().sum()) for d in exact.values())) ** 0.5
    assert result.overall_error == pytest.approx(overall, rel=1e-3)
    record = json.loads((result.out_dir / "spanish_ft_record.json").read_text())
    assert record["error"]["relative_frobenius"] == result.overall_error and record["method"] == "svd"


def test_record_card_and_template_inheritance(adapters, tiny_model_dirs, repo_root, tmp_path):
    a, few = adapters["llama2"]["a"], adapters["llama2"]["few"]
    result = fuse_adapters(FuseSettings(adapters=[a, few], out=tmp_path / "out", weights=[1.0, 2.0],
                                        name="llama2-fusionado"))
    record = json.loads((result.out_dir / "spanish_ft_record.json").read_text())
    assert record["kind"] == "fused" and record["name"] == "llama2-fusionado" and record["family"] == "llama2"
    assert record["template"]["sha256"] == "1" * 64 and record["preset"] == "P"
    assert record["base_model"]["name_or_path"] == str(tiny_model_dirs["llama2"])
    import hashlib

    assert [(s["name"], s["weight"], s["sha256"]) for s in record["sources"]] == [
        (p.name if p == few else "a", w, hashlib.sha256((p / "adapter_model.safetensors").read_bytes()).hexdigest())
        for p, w in ((a, 1.0), (few, 2.0))
    ]
    assert "llama2-fusionado" in (result.out_dir / "README.md").read_text()
    tensors = load_file(result.out_dir / "adapter_model.safetensors")
    assert set(tensors) == set(load_file(a / "adapter_model.safetensors")) and {t.dtype for t in tensors.values()} == {
        torch.float32
    }


def with_record(src: Path, dst: Path, **fields) -> Path:
    shutil.copytree(src, dst)
    record_path = dst / "spanish_ft_record.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    record_path.write_text(json.dumps({**record, **fields}))
    return dst


def test_different_templates_are_refused_unless_one_is_given(adapters, repo_root, tmp_path):
    a = adapters["llama2"]["a"]
    other = with_record(a, tmp_path / "other", template={"name": "U", "sha256": "2" * 64})
    with pytest.raises(ValueError, match=r"different instruction templates.*--template"):
        fuse_adapters(FuseSettings(adapters=[a, other], out=tmp_path / "out"))
    template = repo_root / "instruction-templates" / "spanish_ft-Llama-2-chat.yaml"
    record = json.loads(
        (fuse_adapters(FuseSettings(adapters=[a, other], out=tmp_path / "out",
                                    template=template)).out_dir / "spanish_ft_record.json").read_text()
    )
    assert record["template"]["file"] == template.name
    assert record["template"]["sha256"] == __import__("hashlib").sha256(template.read_bytes()).hexdigest()


def edited(src: Path, dst: Path, **config_changes) -> Path:
    shutil.copytree(src, dst)
    config = json.loads((dst / "adapter_config.json").read_text())
    (dst / "adapter_config.json").write_text(json.dumps({**config, **config_changes}))
    return dst


@pytest.mark.parametrize(
    "change, message",
    [
        ({"use_dora": True}, r"use_dora=True: DoRA"),
        ({"bias": "lora_only"}, r"bias='lora_only'"),
        ({"modules_to_save": ["lm_head"]}, r"modules_to_save=\['lm_head'\]"),
        ({"trainable_token_indices": [1, 2]}, r"trainable_token_indices"),
        ({"init_lora_weights": "pissa"}, r"init_lora_weights='pissa'.*rewrites the base weights"),
        ({"init_lora_weights": "olora"}, r"init_lora_weights='olora'"),
        ({"init_lora_weights": "loftq"}, r"init_lora_weights='loftq'"),
        ({"init_lora_weights": "corda"}, r"init_lora_weights='corda'"),
        ({"layer_replication": [[0, 2], [1, 2]]}, r"layer_replication"),
        ({"use_qalora": True}, r"use_qalora=True: QA-LoRA"),
        ({"lora_bias": True}, r"lora_bias=True"),
        ({"alora_invocation_tokens": [5, 6]}, r"alora_invocation_tokens"),
        ({"use_bdlora": {"nblocks": 2}}, r"use_bdlora=.*cannot be proven exact"),
        ({"peft_type": "IA3"}, r"peft_type is 'IA3'; only LORA"),
    ],
)
def test_unfusable_configs_are_refused_naming_folder_and_field(change, message, adapters, tmp_path):
    bad = edited(adapters["llama2"]["few"], tmp_path / "bad", **change)
    with pytest.raises(ValueError, match=message) as error:
        fuse_adapters(FuseSettings(adapters=[adapters["llama2"]["a"], bad], out=tmp_path / "out"))
    assert str(bad) in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("init", [False, "gaussian", "orthogonal", "eva"])
def test_inits_that_keep_the_plain_forward_are_accepted(init, adapters, tmp_path):
    fine = edited(adapters["llama2"]["few"], tmp_path / "fine", init_lora_weights=init)
    assert fuse_adapters(FuseSettings(adapters=[adapters["llama2"]["a"], fine], out=tmp_path / "out")).rank == 4


def test_different_bases_and_families_are_refused(adapters, tmp_path):
    a = adapters["llama2"]["a"]
    other_base = with_record(a, tmp_path / "other-base", base_model={"name_or_path": "meta-llama/Llama-2-7b-hf"})
    with pytest.raises(ValueError, match=r"differ in base model.*meta-llama/Llama-2-7b-hf.*base_model.name_or_path"):
        fuse_adapters(FuseSettings(adapters=[a, other_base], out=tmp_path / "out"))
    other_family = with_record(a, tmp_path / "other-family", family="mistral")
    with pytest.raises(ValueError, match=r"differ in model family.*'mistral'"):
        fuse_adapters(FuseSettings(adapters=[a, other_family], out=tmp_path / "out"))
    # an adapter from another tool: no record, the base comes from adapter_config.json
    no_record = edited(adapters["llama2"]["few"], tmp_path / "no-record", base_model_name_or_path="tiiuae/falcon-7b")
    with pytest.raises(ValueError, match=r"'tiiuae/falcon-7b' \(adapter_config.json base_model_name_or_path\)"):
        fuse_adapters(FuseSettings(adapters=[a, no_record], out=tmp_path / "out"))


def test_mismatched_shapes_are_refused(adapters, tmp_path):
    wider = tmp_path / "wider"  # same module names and base, but A takes inputs twice as wide
    shutil.copytree(adapters["llama2"]["few"], wider)
    tensors = load_file(wider / "adapter_model.safetensors")
    save_file(
        {k: torch.cat([v, v], dim=1) if "lora_A" in k else v for k, v in tensors.items()},
        wider / "adapter_model.safetensors",
    )
    with pytest.raises(
        ValueError, match=r"d_out x d_in 64x128 in .*wider but a linear layer of 64x64 in .*different models"
    ):
        fuse_adapters(FuseSettings(adapters=[adapters["llama2"]["b"], wider], out=tmp_path / "out"))


def test_rank_in_weights_must_match_config(adapters, tmp_path):
    wrong = edited(adapters["llama2"]["few"], tmp_path / "wrong", r=3)
    with pytest.raises(ValueError, match=r"rank 2 in its weights but r=3"):
        fuse_adapters(FuseSettings(adapters=[wrong], out=tmp_path / "out"))


def test_pickle_weights_need_allow_pickle(adapters, tmp_path):
    pickled = tmp_path / "pickled"
    shutil.copytree(adapters["llama2"]["few"], pickled)
    torch.save(load_file(pickled / "adapter_model.safetensors"), pickled / "adapter_model.bin")
    (pickled / "adapter_model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"adapter_model.bin: pickle .*--allow-pickle"):
        fuse_adapters(FuseSettings(adapters=[adapters["llama2"]["a"], pickled], out=tmp_path / "out"))
    assert fuse_adapters(FuseSettings(adapters=[adapters["llama2"]["a"], pickled], out=tmp_path / "out",
                                      allow_pickle=True)).rank == 4


def test_extra_tensors_are_refused(adapters, tmp_path):
    extra = tmp_path / "extra"
    shutil.copytree(adapters["llama2"]["few"], extra)
    tensors = load_file(extra / "adapter_model.safetensors")
    tensors["base_model.model.model.embed_tokens.weight"] = torch.zeros(3, 3)
    save_file(tensors, extra / "adapter_model.safetensors")
    with pytest.raises(ValueError, match=r"embed_tokens.weight' is not a LoRA A/B matrix"):
        fuse_adapters(FuseSettings(adapters=[extra], out=tmp_path / "out"))


def test_cli_fuses_and_reports_errors(adapters, tmp_path, capsys):
    a, b = adapters["falcon"]["a"], adapters["falcon"]["b"]
    assert main(["fuse", str(a), str(b), "--out", str(tmp_path / "c"), "--method", "svd", "--rank", "6"]) == 0
    out = capsys.readouterr().out
    assert "relative error" in out and f"into {tmp_path / 'c'}" in out and "r=6" in out
    assert main(["fuse", str(a), str(b), "--out", str(tmp_path / "d"), "--rank", "6"]) == 1
    assert "--rank applies to --method svd only" in capsys.readouterr().err
    assert main(["fuse", str(a), str(b), "--out", str(tmp_path / "d"), "--weights", "1"]) == 1
    assert "one finite number per adapter (2)" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_import_needs_no_transformers(repo_root):
    code = "import sys, training.adapters.fuse; assert 'transformers' not in sys.modules and 'peft' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=repo_root, check=True)


LATEST_CHECK = """
import sys, torch
from peft import PeftModel, __version__
from peft.tuners.lora import LoraLayer
from transformers import AutoModelForCausalLM
base, fused, *sources = sys.argv[1:]
ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(0))
def logits(adapters):
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    names = [f"s{i}" for i in range(len(adapters))]
    model = PeftModel.from_pretrained(model, adapters[0][0], adapter_name=names[0])
    for name, (path, _) in zip(names[1:], adapters[1:]):
        model.load_adapter(path, adapter_name=name)
    model.base_model.set_adapter(names)
    for layer in model.modules():
        if isinstance(layer, LoraLayer):
            for name, (_, weight) in zip(names, adapters):
                layer.set_scale(name, weight)
    with torch.no_grad():
        return model(ids).logits
reference = logits([(sources[i], float(sources[i + 1])) for i in range(0, len(sources), 2)])
print(__version__, float((logits([(fused, 1.0)]) - reference).norm() / reference.norm()))
"""


@pytest.mark.skipif(
    not os.environ.get("SPANISH_FT_LATEST_PYTHON"), reason="set SPANISH_FT_LATEST_PYTHON to a python with current PEFT"
)
@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_fused_adapter_loads_in_current_peft(family, tiny_model_dirs, adapters, tmp_path):
    """Loaded by another PEFT (e.g. 0.21), the fused adapter equals its sources loaded by that PEFT."""
    few, b = adapters[family]["few"], adapters[family]["b"]
    fused = fuse_adapters(FuseSettings(adapters=[few, b], out=tmp_path / "fused", weights=[1.0, 0.3])).out_dir
    command = [
        os.environ["SPANISH_FT_LATEST_PYTHON"],
        "-c",
        LATEST_CHECK,
        str(tiny_model_dirs[family]),
        str(fused),
        str(few),
        "1.0",
        str(b),
        "0.3",
    ]
    version, error = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()[-2:]
    assert float(error) < 1e-5, (version, error)
