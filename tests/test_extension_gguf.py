"""The extension and exported GGUF models: the export subprocess, and the profile when a GGUF model is loaded.

Without a webui: the logic of spanish_ft_ext/gguf.py, and the Adaptador tab's handlers with the webui
module's readers replaced (a fake `modules.shared` only lets them import). The export really runs,
as the extension runs it: `python -m training export-gguf` in a subprocess.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import types
from pathlib import Path

import pytest
from test_fuse import make_adapter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "extensions" / "spanish_ft"))

from spanish_ft_ext import gguf as ext_gguf  # noqa: E402
from spanish_ft_ext.profile import WebuiPaths, resolve_profile  # noqa: E402

from training.adapters.gguf.file_record import read_gguf_record, record_path  # noqa: E402
from training.families import FAMILIES  # noqa: E402

TEMPLATES = sorted(p.stem for p in (ROOT / "instruction-templates").glob("*.yaml"))
PRESETS = sorted(p.stem for p in (ROOT / "presets").glob("*.yaml"))


@pytest.fixture(scope="module")
def adapter(tiny_model_dirs, tmp_path_factory) -> Path:
    base = tiny_model_dirs["mistral"]
    family = FAMILIES["mistral"]
    record = {"kind": "fused", "name": "mistral-fusionado", "family": "mistral", "task": "fusionado",
              "base_model": {"name_or_path": str(base)}, "preset": family.preset,
              "template": {"name": Path(family.template_file).stem, "file": family.template_file, "sha256": "0" * 64}}
    return make_adapter(base, tmp_path_factory.mktemp("loras") / "mistral-fusionado", family.lora_targets, 4, 8,
                        seed=3, record=record)


@pytest.fixture(scope="module")
def models_dir(adapter, tmp_path_factory) -> Path:
    """A webui models folder with the adapter exported by the extension's own subprocess."""
    models = tmp_path_factory.mktemp("models")
    out = ext_gguf.export_target(models, adapter.name, "q8_0")
    argv, env = ext_gguf.export_command(adapter, out, "q8_0")
    progress = list(ext_gguf.run_export(argv, env, every_seconds=0))
    assert progress[-1][1] == 0, progress[-1]
    assert any(code is None for _, code in progress)  # progress lines came while it ran
    return models


def test_the_subprocess_export_lands_in_the_models_folder_with_its_record(models_dir):
    out = models_dir / "mistral-fusionado-q8_0.gguf"
    assert read_gguf_record(out)["gguf_type"] == "q8_0" and record_path(out).is_file()


@pytest.mark.slow  # 10 s: the subprocess imports torch before it refuses
def test_a_refusal_in_the_subprocess_is_its_last_line(adapter, models_dir):
    argv, env = ext_gguf.export_command(adapter, models_dir / "mistral-fusionado-q8_0.gguf", "q8_0")
    *_, (line, code) = ext_gguf.run_export(argv, env)
    assert code == 1 and line.startswith("error:") and "already exists" in line


def test_a_loaded_exported_model_gives_its_profile(models_dir, tmp_path):
    info = ext_gguf.gguf_model_info(models_dir, "mistral-fusionado-q8_0.gguf")
    assert (info.template, info.preset, info.family) == ("spanish_ft-Mistral", "spanish_ft-Mistral", "mistral")
    assert info.sources == ("mistral-fusionado",)
    profile = resolve_profile(info, TEMPLATES, PRESETS, WebuiPaths(tmp_path, tmp_path))
    assert (profile.template, profile.preset, profile.mode) == ("spanish_ft-Mistral", "spanish_ft-Mistral", "instruct")


def test_a_copy_without_its_record_is_recognised_by_its_metadata_and_others_are_not(models_dir, tmp_path):
    folder = tmp_path / "mistral-gguf"  # the webui also loads a folder holding a .gguf file
    folder.mkdir()
    shutil.copyfile(models_dir / "mistral-fusionado-q8_0.gguf", folder / "model.gguf")
    info = ext_gguf.gguf_model_info(tmp_path, "mistral-gguf")
    assert (info.template, info.preset) == ("spanish_ft-Mistral", "spanish_ft-Mistral")
    (tmp_path / "other.gguf").write_bytes(b"GGUF" + bytes(64))  # not a GGUF of ours (nor a valid one)
    assert ext_gguf.gguf_model_info(tmp_path, "other.gguf") is None
    assert ext_gguf.gguf_model_info(tmp_path, "None") is None


def test_without_the_export_module_the_message_gives_the_command(monkeypatch, tmp_path):
    out = tmp_path / "a-q8_0.gguf"
    assert ext_gguf.export_blocker("a", out, "q8_0") == ""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    message = ext_gguf.export_blocker("a", out, "q8_0")
    assert "falta el paquete gguf" in message
    assert f"python -m training export-gguf loras/a --out {out} --type q8_0" in message


def test_progress_is_the_last_line_tqdm_drew():
    assert ext_gguf.last_progress_line("memory: 1 GiB\nwriting x:  10%|#\rwriting x:  60%|######\r") == \
        "writing x:  60%|######"


@pytest.fixture
def tab(monkeypatch, models_dir):
    """spanish_ft_ext.adapter_tab with a fake webui: no adapter active, the exported GGUF model loaded."""
    modules = types.ModuleType("modules")
    shared = types.ModuleType("modules.shared")
    shared.args = argparse.Namespace(multi_user=False, model_dir=str(models_dir))
    shared.model_name = "mistral-fusionado-q8_0.gguf"
    modules.shared = shared
    monkeypatch.setitem(sys.modules, "modules", modules)
    monkeypatch.setitem(sys.modules, "modules.shared", shared)
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "webui"))
    importlib.import_module("launch_webui")  # gradio 4.37 (the webui's) imports beside huggingface-hub 1.x
    tab = importlib.import_module("spanish_ft_ext.adapter_tab")
    webui = tab.webui
    monkeypatch.setattr(webui, "active_adapters", lambda: ())
    monkeypatch.setattr(webui, "adapter_infos", lambda: {})
    monkeypatch.setattr(webui, "loaded_model_config", lambda: None)
    monkeypatch.setattr(webui, "resolve_active_profile",
                        lambda info: resolve_profile(info, TEMPLATES, PRESETS, WebuiPaths(models_dir, models_dir)))
    monkeypatch.setattr(webui, "template_text", lambda name: f"text of {name}")
    return tab


def test_loading_an_exported_gguf_model_applies_its_profile_once(tab):
    panel = tab.AdapterPanel(*[f"<{name}>" for name in ("status", "guard", "load_fused", "fuse_now", "last_seen",
                                                          "lora_menu", "model_status", "template", "template_text",
                                                          "preset", "mode")])
    updates = tab.status_changed(panel, {"auto_profile": True}, ())
    assert updates[panel.template]["value"] == "spanish_ft-Mistral" and updates[panel.mode] == "instruct"
    assert updates[panel.template_text] == "text of spanish_ft-Mistral"
    assert updates[panel.last_seen] == ("mistral-fusionado-q8_0.gguf",)
    assert "modelo GGUF exportado por spanish_ft desde `mistral-fusionado`" in updates[panel.status]
    again = tab.status_changed(panel, {"auto_profile": True}, updates[panel.last_seen])
    assert again == {panel.last_seen: ("mistral-fusionado-q8_0.gguf",)}  # kept as the user may have changed it


def test_the_export_button_refuses_without_one_adapter_and_in_multi_user_mode(tab, monkeypatch):
    assert "Aplica exactamente un adaptador" in list(tab.export_click("q8_0"))[-1]
    monkeypatch.setattr(tab.webui, "multi_user", lambda: True)
    assert "modo multiusuario" in list(tab.export_click("q8_0"))[-1]


@pytest.mark.slow  # ~12 s: a real export in a subprocess
def test_the_export_button_exports_the_active_adapter_with_the_webuis_template(tab, adapter, monkeypatch, tmp_path,
                                                                               tiny_model_dirs):
    from gguf import GGUFReader
    from spanish_ft_ext.adapters import read_adapter_info
    from spanish_ft_ext.profile import WebuiPaths as Paths

    templates = tmp_path / "user_data" / "instruction-templates"
    templates.mkdir(parents=True)
    source = (ROOT / FAMILIES["mistral"].template_file).read_text(encoding="utf-8")
    (templates / "spanish_ft-Mistral.yaml").write_text(source.replace("Eres un asistente", "Eres un ayudante"))
    models = tmp_path / "user_data" / "models"
    monkeypatch.setattr(tab.webui, "active_adapters", lambda: (adapter.name,))
    monkeypatch.setattr(tab.webui, "models_dir", lambda: models)
    monkeypatch.setattr(tab.webui, "webui_paths", lambda: Paths(tmp_path, tmp_path / "user_data"))
    shutil.copytree(tiny_model_dirs["mistral"], models / "tiny-mistral")  # the loaded base, which the export uses
    monkeypatch.setattr(tab.webui, "model_name", lambda: "tiny-mistral")
    record = adapter / "spanish_ft_record.json"
    monkeypatch.setattr(tab.webui, "adapter_infos", lambda: {adapter.name: read_adapter_info(adapter)})
    saved = record.read_text()
    record.write_text(saved.replace(str(tiny_model_dirs["mistral"]), "demo-output/models/not-here"))
    try:
        shown = list(tab.export_click("f16"))
    finally:
        record.write_text(saved)
    assert shown[-1].startswith("**Hecho.**") and "mistral-fusionado-f16.gguf" in shown[-1]
    out = models / "mistral-fusionado-f16.gguf"
    assert "Eres un ayudante" in GGUFReader(out).fields["tokenizer.chat_template"].contents()
    assert "Ya existe" in list(tab.export_click("f16"))[-1]  # never over a file, not even its own export
