"""The extension's logic without a webui: adapter records, base-model checks, profiles, the guard, fusion.

Real PEFT adapters on a tiny llama model (tests/webui/tiny_adapters.py); the webui-facing
glue is exercised by tests/test_extension_ui.py and the opt-in tests/test_webui_integration.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "extensions" / "spanish_ft"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "webui"))

from spanish_ft_ext.adapters import check_base_model, scan_adapters  # noqa: E402
from spanish_ft_ext.guard import decide_guard, fuse_selection, fusion_name  # noqa: E402
from spanish_ft_ext.profile import ProfileError, WebuiPaths, resolve_profile, should_auto_apply  # noqa: E402
from tiny import build_config  # noqa: E402
from tiny_adapters import make_adapter  # noqa: E402

TEMPLATES = sorted(p.stem for p in (ROOT / "instruction-templates").glob("*.yaml"))
PRESETS = sorted(p.stem for p in (ROOT / "presets").glob("*.yaml"))


@pytest.fixture(scope="module")
def lora_dir(tiny_model_dirs, tmp_path_factory) -> Path:
    """instrucciones and leyes-ec (rank 4), a fused adapter of the two, and a foreign rank-8 adapter."""
    loras = tmp_path_factory.mktemp("loras")
    base = tiny_model_dirs["llama2"]
    make_adapter(base, loras / "llama2-instrucciones", task="instrucciones", rank=4, seed=1)
    make_adapter(base, loras / "llama2-leyes-ec", task="leyes-ec", rank=4, seed=2)
    make_adapter(base, loras / "ajeno", rank=8, seed=3, record=False)
    fuse_selection(loras, ("llama2-instrucciones", "llama2-leyes-ec"))
    (loras / "fusion-llama2-instrucciones+llama2-leyes-ec").rename(loras / "llama2-fusionado")
    return loras


@pytest.fixture(scope="module")
def infos(lora_dir):
    found, problems = scan_adapters(lora_dir)
    assert problems == []
    return found


def llama_config(**changes) -> dict:
    config = build_config("llama2", vocab_size=400)
    shape = {"model_type": config.model_type, "hidden_size": config.hidden_size,
             "num_hidden_layers": config.num_hidden_layers, "vocab_size": config.vocab_size}
    return {**shape, **changes}


def test_records_give_family_task_template_preset_and_rank(infos, tiny_model_dirs):
    info = infos["llama2-leyes-ec"]
    assert (info.has_record, info.family, info.task, info.rank) == (True, "llama2", "leyes-ec", 4)
    assert (info.template, info.preset) == ("spanish_ft-Llama-2-chat", "spanish_ft-Llama-2-chat")
    assert info.base_shape["hidden_size"] == 64
    assert (infos["ajeno"].has_record, infos["ajeno"].family, infos["ajeno"].rank) == (False, None, 8)
    fused = infos["llama2-fusionado"]
    assert (fused.task, fused.family, fused.rank) == ("fusionado", "llama2", 8)
    assert set(fused.sources) == {"llama2-instrucciones", "llama2-leyes-ec"}


def test_unreadable_record_is_reported_and_other_adapters_still_listed(lora_dir, tmp_path):
    import shutil

    copy = tmp_path / "loras"
    shutil.copytree(lora_dir, copy)
    (copy / "llama2-leyes-ec" / "spanish_ft_record.json").write_text("{roto", encoding="utf-8")
    found, problems = scan_adapters(copy)
    assert "llama2-leyes-ec" not in found and "llama2-instrucciones" in found
    assert len(problems) == 1 and "llama2-leyes-ec/spanish_ft_record.json" in problems[0]


def test_base_model_that_fits_gives_no_warning(infos):
    assert check_base_model(infos["llama2-instrucciones"], llama_config()) == []
    assert check_base_model(infos["ajeno"], {"model_type": "falcon"}) == []  # no record: nothing to check


def test_other_family_is_named_with_the_base_model_to_load(infos):
    problems = check_base_model(infos["llama2-instrucciones"], llama_config(model_type="mistral"), "mi-mistral")
    text = " ".join(problems)
    assert "familia llama2" in text and "mi-mistral" in text and "familia mistral" in text
    assert problems[-1].startswith("Solución: carga «llama2»") and "LlamaForCausalLM" in problems[-1]


def test_shape_mismatch_names_each_differing_key(infos):
    problems = check_base_model(infos["llama2-instrucciones"], llama_config(hidden_size=128, vocab_size=32000))
    assert any("hidden_size 64" in p and "128" in p for p in problems)
    assert any("vocabulario 400" in p and "32000" in p for p in problems)
    assert not any("capas" in p for p in problems[:-1])


def test_profile_resolves_to_installed_template_and_preset(infos, tmp_path):
    paths = WebuiPaths(tmp_path, tmp_path / "user_data")
    profile = resolve_profile(infos["llama2-fusionado"], TEMPLATES, PRESETS, paths)
    assert (profile.template, profile.preset, profile.mode) == (
        "spanish_ft-Llama-2-chat", "spanish_ft-Llama-2-chat", "instruct")


def test_missing_template_and_preset_are_both_named_with_the_install_command(infos, tmp_path):
    paths = WebuiPaths(tmp_path / "tgw", tmp_path / "tgw" / "user_data")
    with pytest.raises(ProfileError) as raised:
        resolve_profile(infos["llama2-instrucciones"], ["Alpaca"], ["Top-P"], paths)
    message = str(raised.value)
    assert str(paths.data / "instruction-templates" / "spanish_ft-Llama-2-chat.yaml") in message
    assert str(paths.data / "presets" / "spanish_ft-Llama-2-chat.yaml") in message
    assert f"python install.py --webui {paths.webui}" in message


def test_adapter_without_record_has_no_profile(infos, tmp_path):
    with pytest.raises(ProfileError, match="spanish_ft_record.json"):
        resolve_profile(infos["ajeno"], TEMPLATES, PRESETS, WebuiPaths(tmp_path, tmp_path))


def test_profile_is_auto_applied_once_per_newly_active_adapter():
    assert should_auto_apply(("a",), None)
    assert should_auto_apply(("b",), ("a",))
    assert not should_auto_apply(("a",), ("a",))  # same adapter again: the user's later changes are kept
    assert not should_auto_apply((), ("a",))
    assert not should_auto_apply(("a", "b"), None)  # the guard's case


def test_one_adapter_does_not_trigger_the_guard(infos):
    assert not decide_guard(["llama2-instrucciones"], infos).triggered
    assert not decide_guard(["None", "llama2-instrucciones", "llama2-instrucciones"], infos).triggered


def test_two_equal_rank_adapters_offer_the_family_fused_adapter_and_a_fusion(infos):
    decision = decide_guard(["llama2-instrucciones", "llama2-leyes-ec"], infos)
    assert decision.triggered and "max() arg is an empty sequence" in decision.message
    assert decision.replacement == "llama2-fusionado" and "exactamente" in decision.message
    assert decision.can_fuse and decision.fusion_name == "fusion-llama2-instrucciones+llama2-leyes-ec"


def test_different_ranks_say_only_the_first_is_used_and_unknown_family_gets_no_replacement(infos):
    decision = decide_guard(["ajeno", "llama2-instrucciones"], infos)
    assert "rangos distintos" in decision.message and "«ajeno»" in decision.message
    assert decision.replacement is None and decision.can_fuse  # the fuser decides whether they fit


def test_fusing_is_blocked_in_multi_user_mode_and_for_missing_or_mixed_adapters(infos):
    decision = decide_guard(["llama2-instrucciones", "llama2-leyes-ec"], infos, allow_writes=False)
    assert not decision.can_fuse and "multiusuario" in decision.fuse_blocker
    assert decision.replacement == "llama2-fusionado"  # loading an installed adapter writes nothing
    missing = decide_guard(["llama2-instrucciones", "borrado"], infos)
    assert not missing.can_fuse and "borrado" in missing.fuse_blocker
    from dataclasses import replace

    mixed = {**infos, "mistral-x": replace(infos["llama2-leyes-ec"], name="mistral-x", family="mistral")}
    decision = decide_guard(["llama2-instrucciones", "mistral-x"], mixed)
    assert not decision.can_fuse and "familias distintas" in decision.fuse_blocker and decision.replacement is None


def lora_logits(base_dir: Path, adapters: dict[str, Path], active: list[str]) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    names = list(adapters)
    model = PeftModel.from_pretrained(model, adapters[names[0]], adapter_name=names[0])
    for name in names[1:]:
        model.load_adapter(adapters[name], adapter_name=name)
    model.base_model.set_adapter(active)  # PEFT itself can run several adapters at once
    with torch.no_grad():
        return model(torch.arange(1, 17)[None]).logits


def test_fuse_now_makes_one_adapter_equal_to_both_selected_and_the_guard_offers_it(lora_dir, tiny_model_dirs, tmp_path):
    import shutil

    loras = tmp_path / "loras"
    shutil.copytree(lora_dir, loras)
    selection = ("llama2-instrucciones", "llama2-leyes-ec")
    result = fuse_selection(loras, selection)
    assert result.out_dir == loras / fusion_name(selection) and result.rank == 8
    base = tiny_model_dirs["llama2"]
    both = lora_logits(base, {n: loras / n for n in selection}, list(selection))
    fused = lora_logits(base, {"f": result.out_dir}, ["f"])
    torch.testing.assert_close(fused, both, rtol=1e-4, atol=1e-5)
    infos, _ = scan_adapters(loras)
    assert decide_guard(list(selection), infos).replacement == fusion_name(selection)  # exact, made earlier


def cli_memory(config: str, method: str, bits: int, seq_len: int, batch: int, rank: int) -> dict:
    import json
    import subprocess

    command = [sys.executable, "-m", "training", "memory", config, "--method", method, "--bits", str(bits),
               "--seq-len", str(seq_len), "--batch", str(batch), "--rank", str(rank), "--json"]
    return json.loads(subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout)


def markdown_rows(table: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in table.splitlines() if line.startswith("|")]
    header = [cell.strip().strip("*") for cell in rows[0]]
    return {cells[0].strip(): dict(zip(header[1:], (c.strip().strip("*") for c in cells[1:]), strict=True))
            for cells in rows[2:]}


@pytest.mark.parametrize("model", ["mistral-7b", "tiny"])
def test_memory_panel_numbers_equal_the_cli(model, tiny_model_dirs):
    from spanish_ft_ext.memory import PART_LABELS, SCENARIOS, gib, memory_markdown, memory_rows

    from training.memory.arch import load_model_config

    source = str(tiny_model_dirs["llama2"] / "config.json") if model == "tiny" else model
    rows = memory_rows(load_model_config(source), seq_len=512, batch=2, rank=8)
    table = markdown_rows(memory_markdown(rows))
    for (label, method, bits), (row_label, result) in zip(SCENARIOS, rows, strict=True):
        cli = cli_memory(source, method, bits, 512, 2, 8)
        assert row_label == label and result.breakdown == cli["breakdown"] and result.total_bytes == cli["total_bytes"]
        shown = table[label]
        assert shown.pop("total") == gib(cli["total_bytes"])
        assert {k: v for k, v in shown.items() if v != "—"} == {
            PART_LABELS.get(k, k): gib(v) for k, v in cli["breakdown"].items()}


def test_the_shipped_demo_adapters_are_recognised_on_the_demo_model_with_the_gemma_profile(tmp_path):
    """loras/gemma3-270m-*: family gemma3, fit the Gemma-3-270M config the webui loads, Gemma's template and preset."""
    import json

    found, problems = scan_adapters(ROOT / "loras")
    assert problems == []
    demo = {name: info for name, info in found.items() if name.startswith("gemma3-270m-")}
    assert set(demo) == {"gemma3-270m-instrucciones", "gemma3-270m-leyes-ec", "gemma3-270m-fusionado"}
    config = json.loads((ROOT / "training" / "memory" / "configs" / "gemma3-270m.json").read_text(encoding="utf-8"))
    for name, info in demo.items():
        assert info.family == "gemma3" and check_base_model(info, config, "gemma3-270m") == [], name
        profile = resolve_profile(info, TEMPLATES, PRESETS, WebuiPaths(tmp_path, tmp_path / "user_data"))
        assert (profile.template, profile.preset) == ("spanish_ft-Gemma", "spanish_ft-Gemma")
        assert (ROOT / "loras" / name / "NOTICE").read_text(encoding="utf-8").startswith("Gemma is provided under")
    # a 7B adapter on the demo model is named as the wrong family
    assert "familia gemma3" in " ".join(check_base_model(demo["gemma3-270m-fusionado"], {"model_type": "llama"}))
