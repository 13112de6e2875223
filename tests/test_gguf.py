"""`python -m training export-gguf`: the GGUF file computes what base + adapter computed, read by transformers.

Reference: PEFT's base + adapter merged in float32. The GGUF file is read back with transformers' own
GGUF reader (`from_pretrained(folder, gguf_file=...)`, which undoes llama.cpp's tensor layout and
rebuilds the tokenizer from the file's metadata). For Gemma 3 that reader leaves what llama.cpp derives
from the file at Gemma3TextConfig's defaults (which layers slide, the query scale, the local rope base);
those are given to it as llama.cpp reads them (llama_cpp_reading), so the file is judged as llama.cpp
runs it. Measured here (relative Frobenius error of the logits over a Spanish conversation rendered
with the family's template; top-1: share of positions whose most likely next token is the same): f16
about 5e-4 for tiny Llama, Mistral and Falcon, 9e-4 for tiny Gemma 3 and 6e-4 for the demo model
(Gemma-3-270M + gemma3-270m-fusionado), asserted < 5e-3; q8_0 about 1e-2 (tiny Gemma 3 2e-2, demo
1e-2), top-1 agreement 100 % (tiny Gemma 3 and the demo: 98 %), asserted >= 90 %.
llama.cpp itself runs the files in tests/test_llamacpp.py.
"""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import pytest
import torch
import transformers
from peft import PeftModel
from test_fuse import load_base, make_adapter, relative_error
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.__main__ import main
from training.adapters.gguf import export
from training.adapters.gguf.export import ExportSettings, export_gguf
from training.adapters.gguf.file_record import METADATA_KEYS, NOTICE_KEY, read_gguf_record, record_path
from training.families import FAMILIES, GEMMA_TERMS_URL, notice_of
from training.files import sha256_file
from training.templates import load_template

ROOT = Path(__file__).resolve().parents[1]
CONVERSATION = [
    {"role": "user", "content": "¿Cuál es la capital de Ecuador? Responde en una frase clara y concisa."},
    {"role": "assistant", "content": "La capital de Ecuador es Quito. Según el artículo 71 de la Constitución, la "
                                     "naturaleza o Pacha Mama tiene derecho a que se respete su existencia."},
]
EOS = {"llama2": "</s>", "mistral": "</s>", "falcon": "<|endoftext|>", "gemma3": "<end_of_turn>"}
ARCHITECTURE = {"llama2": "llama", "mistral": "llama", "falcon": "falcon", "gemma3": "gemma3"}
# transformers 5.6's GGUF reader (the webui's pin) rebuilds a Llama-style tokenizer with BOS and EOS swapped and
# splits a literal `<s>` (measured with 5.6.2; right in 5.25). The file itself is checked with gguf's own reader
# (assert_vocabulary_in_file) under every version; the round trip through transformers where its reader is sound.
TRANSFORMERS_READS_GGUF_TOKENIZERS = tuple(int(p) for p in transformers.__version__.split(".")[:2]) >= (5, 7)
F16_MAX_RELATIVE_ERROR, Q8_0_MIN_TOP1 = 5e-3, 0.90


def record_for(family: str, base: Path) -> dict:
    template = FAMILIES[family].template_file
    return {"kind": "trained", "name": f"{family}-prueba", "family": family, "task": "instrucciones",
            "base_model": {"name_or_path": str(base)}, "preset": FAMILIES[family].preset,
            "template": {"name": Path(template).stem, "file": template, "sha256": sha256_file(ROOT / template)}}


@pytest.fixture(scope="module")
def adapter_of(tiny_model_dirs, tmp_path_factory) -> dict[str, Path]:
    """Per family, a random LoRA adapter (non-zero B) on every target module, with a training record."""
    root = tmp_path_factory.mktemp("gguf-adapters")
    return {family: make_adapter(base, root / f"{family}-prueba", FAMILIES[family].lora_targets, 4, 8, seed=7,
                                 record=record_for(family, base))
            for family, base in tiny_model_dirs.items()}


@pytest.fixture(scope="module")
def exported(adapter_of, tmp_path_factory) -> dict[tuple[str, str], Path]:
    folder = tmp_path_factory.mktemp("gguf-files")
    return {(family, kind): export_gguf(ExportSettings(adapter=adapter, out=folder / f"{family}-{kind}.gguf",
                                                       gguf_type=kind))
            for family, adapter in adapter_of.items() for kind in ("f16", "q8_0")}


def prompt_ids(tokenizer, template: Path) -> torch.Tensor:
    text = load_template(template).render(CONVERSATION)
    return tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids


def reference_logits(base: Path, adapter: Path, ids: torch.Tensor) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    with torch.no_grad():
        return merged(ids).logits[0]


def gguf_logits(path: Path, ids: torch.Tensor) -> torch.Tensor:
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32,
                                                 **llama_cpp_reading(path))
    with torch.no_grad():
        return model(ids).logits[0]


def llama_cpp_reading(path: Path) -> dict:
    """Config values llama.cpp takes from a gemma3 file (src/models/gemma3.cpp, llama-hparams.cpp) that
    transformers' GGUF reader ignores: layer i slides when i % pattern < pattern - 1 (or per-layer flags),
    queries scale by 1/sqrt(key_length) (1/sqrt(hidden/heads) at 62 layers), the sliding layers' rope base."""
    fields = gguf_metadata(path)
    if fields["general.architecture"] != "gemma3":
        return {}
    key = lambda name: fields.get(f"gemma3.{name}")  # noqa: E731
    layers, pattern = key("block_count"), key("attention.sliding_window_pattern") or 6
    sliding = pattern if isinstance(pattern, list) else [i % pattern < pattern - 1 for i in range(layers)]
    rope = lambda theta: {"rope_type": "default", "rope_theta": theta}  # noqa: E731
    return {"layer_types": ["sliding_attention" if s and key("attention.sliding_window") else "full_attention"
                            for s in sliding],
            "query_pre_attn_scalar": key("embedding_length") // key("attention.head_count") if layers == 62
            else key("attention.key_length"),
            "rope_parameters": {"full_attention": rope(key("rope.freq_base")),
                                "sliding_attention": rope(key("rope.freq_base_swa") or 10000.0)},
            "final_logit_softcapping": key("final_logit_softcapping")}


def top1_agreement(logits: torch.Tensor, reference: torch.Tensor) -> float:
    return float((logits.argmax(-1) == reference.argmax(-1)).float().mean())


def compare(base: Path, adapter: Path, files: dict[str, Path], template: Path) -> dict[str, tuple[float, float]]:
    """{type: (relative error, top-1 agreement)} of each file against PEFT's merged model."""
    ids = prompt_ids(AutoTokenizer.from_pretrained(base), template)
    reference = reference_logits(base, adapter, ids)
    measured = {}
    for kind, path in files.items():
        logits = gguf_logits(path, ids)
        measured[kind] = (relative_error(logits, reference), top1_agreement(logits, reference))
    print(f"{base.name}: " + ", ".join(f"{k} error {e:.2e} top-1 {t:.0%}" for k, (e, t) in measured.items()))
    return measured


@pytest.mark.parametrize("family", list(FAMILIES))
def test_f16_and_q8_0_compute_what_peft_merged_computes(family, tiny_model_dirs, adapter_of, exported,
                                                         one_torch_thread):
    files = {kind: exported[(family, kind)] for kind in ("f16", "q8_0")}
    measured = compare(tiny_model_dirs[family], adapter_of[family], files, ROOT / FAMILIES[family].template_file)
    assert measured["f16"][0] < F16_MAX_RELATIVE_ERROR
    assert measured["q8_0"][1] >= Q8_0_MIN_TOP1
    assert files["q8_0"].stat().st_size < 0.7 * files["f16"].stat().st_size


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tokenizer_special_tokens_template_and_profile_travel_in_the_file(family, tiny_model_dirs, exported):
    path = exported[(family, "f16")]
    original = AutoTokenizer.from_pretrained(tiny_model_dirs[family])
    assert_vocabulary_in_file(path, original, EOS[family])
    if TRANSFORMERS_READS_GGUF_TOKENIZERS:
        from_gguf = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        text = load_template(ROOT / FAMILIES[family].template_file).render(CONVERSATION)
        assert from_gguf(text).input_ids == original(text).input_ids
        assert from_gguf.eos_token == EOS[family]
    metadata = gguf_metadata(path)
    assert metadata["tokenizer.chat_template"] == load_template(ROOT / FAMILIES[family].template_file).source
    assert metadata["tokenizer.ggml.model"] == ("gpt2" if family == "falcon" else "llama")
    assert metadata[METADATA_KEYS["template"]] == Path(FAMILIES[family].template_file).stem
    assert metadata[METADATA_KEYS["preset"]] == FAMILIES[family].preset
    assert metadata["general.architecture"] == ARCHITECTURE[family]


def test_a_gemma_file_and_its_record_carry_the_gemma_terms_and_others_no_licence(exported):
    metadata, record = gguf_metadata(exported[("gemma3", "q8_0")]), read_gguf_record(exported[("gemma3", "q8_0")])
    assert metadata["general.license"] == "gemma" and metadata["general.license.link"] == GEMMA_TERMS_URL
    assert metadata[NOTICE_KEY] == record["licence"]["notice"] == notice_of("gemma3")
    assert "Gemma Terms of Use" in notice_of("gemma3") and record["licence"]["link"] == GEMMA_TERMS_URL
    for family in ("llama2", "falcon"):
        assert "general.license" not in gguf_metadata(exported[(family, "f16")])
        assert "licence" not in read_gguf_record(exported[(family, "f16")])


def test_the_space_prefix_is_written_as_the_tokenizer_adds_it():
    from training.adapters.gguf.vocab import adds_space_prefix

    replace = {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
    llama2 = {"normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"}, replace]}}
    mistral = {"pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "add_prefix_space": True}}
    gemma = {"normalizer": replace, "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}}}
    never = {"pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "never"}}
    assert adds_space_prefix(llama2) and adds_space_prefix(mistral)
    assert not adds_space_prefix(gemma) and not adds_space_prefix(never)


def test_gemma3_layer_pattern_query_scale_and_refusals_are_llama_cpp_s():
    from transformers import Gemma3TextConfig

    from training.adapters.gguf import gemma3, layout

    released = Gemma3TextConfig(num_hidden_layers=18, head_dim=256, query_pre_attn_scalar=256)  # Gemma-3-270M's
    assert gemma3.sliding_window_pattern(released) == 6 and gemma3.query_scale_ratio(released) == 1.0
    irregular = Gemma3TextConfig(num_hidden_layers=3, layer_types=["full_attention", "sliding_attention",
                                                                   "full_attention"])
    assert gemma3.sliding_window_pattern(irregular) == [False, True, False]
    scaled = Gemma3TextConfig(rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0,
                                                                  "rope_theta": 1e6},
                                               "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
                              attn_logit_softcapping=50.0)
    with pytest.raises(ValueError, match=r"rope scaling 'linear' \(full_attention layers\).*attention logit "
                                         r"softcapping.*convert_hf_to_gguf"):
        layout.gguf_architecture(scaled)


def assert_vocabulary_in_file(path: Path, original, eos: str) -> None:
    """The file's token list, merges and special token ids are the original tokenizer's (read with gguf's reader)."""
    from gguf import GGUFReader

    fields = GGUFReader(path).fields
    tokens = fields["tokenizer.ggml.tokens"].contents()
    vocabulary = sorted(original.get_vocab().items(), key=lambda item: item[1])
    assert len(tokens) >= len(vocabulary) and all(tokens[i] == token for token, i in vocabulary)
    assert tokens[fields["tokenizer.ggml.eos_token_id"].contents()] == eos
    if original.bos_token is not None and "tokenizer.ggml.bos_token_id" in fields:
        assert tokens[fields["tokenizer.ggml.bos_token_id"].contents()] == original.bos_token
    if fields["tokenizer.ggml.model"].contents() == "gpt2":
        merges = json.loads(original.backend_tokenizer.to_str())["model"]["merges"]
        assert [" ".join(m) if isinstance(m, list) else m for m in merges] == fields["tokenizer.ggml.merges"].contents()


def gguf_metadata(path: Path) -> dict:
    from gguf import GGUFReader

    reader = GGUFReader(path)
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("tokenizer.ggml.t")
            and key not in ("tokenizer.ggml.merges", "tokenizer.ggml.scores")}


def test_record_names_base_adapter_type_and_checksum(exported, adapter_of, tiny_model_dirs):
    path = exported[("mistral", "q8_0")]
    record = read_gguf_record(path)
    assert record["made_by"] == "spanish_ft" and record["file"] == path.name and record["gguf_type"] == "q8_0"
    assert record["sha256"] == sha256_file(path) and record["bytes"] == path.stat().st_size
    assert record["base_model"]["name_or_path"] == str(tiny_model_dirs["mistral"])
    assert record["adapter"]["sha256"] == sha256_file(adapter_of["mistral"] / "adapter_model.safetensors")
    assert record["adapter_record"]["name"] == "mistral-prueba" and record["template"]["name"] == "spanish_ft-Mistral"
    assert {"gguf", "torch", "transformers"} <= set(record["libraries"])


def test_family_mismatch_unsupported_type_and_foreign_output_are_refused(adapter_of, tiny_model_dirs, tmp_path):
    out = tmp_path / "x.gguf"
    with pytest.raises(ValueError, match=r"for the mistral family .* but the base .* 'llama'"):
        export_gguf(ExportSettings(adapter=adapter_of["mistral"], out=out, base=str(tiny_model_dirs["llama2"])))
    with pytest.raises(ValueError, match=r"--type 'q3' is not supported; choose one of f16, bf16, q8_0 .*q4_k_m"):
        export_gguf(ExportSettings(adapter=adapter_of["llama2"], out=out, gguf_type="q3"))
    out.write_bytes(b"a file of the user's")
    with pytest.raises(ValueError, match="exists and spanish_ft did not make it"):
        export_gguf(ExportSettings(adapter=adapter_of["llama2"], out=out, replace=True))
    assert out.read_bytes() == b"a file of the user's" and not record_path(out).exists()


def test_an_earlier_export_is_replaced_only_with_replace(adapter_of, tmp_path):
    out = export_gguf(ExportSettings(adapter=adapter_of["falcon"], out=tmp_path / "falcon.gguf", gguf_type="q8_0"))
    with pytest.raises(ValueError, match="earlier spanish_ft export; pass --replace"):
        export_gguf(ExportSettings(adapter=adapter_of["falcon"], out=out, gguf_type="f16"))
    export_gguf(ExportSettings(adapter=adapter_of["falcon"], out=out, gguf_type="f16", replace=True))
    assert read_gguf_record(out)["gguf_type"] == "f16" and read_gguf_record(out)["sha256"] == sha256_file(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["falcon.gguf", "falcon.gguf.json"]


def test_no_disk_space_is_refused_before_loading(adapter_of, tmp_path, monkeypatch):
    monkeypatch.setattr(export.shutil, "disk_usage", lambda path: types.SimpleNamespace(free=1 << 20))
    monkeypatch.setattr(export, "load_merged", lambda *a: pytest.fail("the model was loaded"))
    with pytest.raises(ValueError, match=r"not enough disk space in .*: the export needs about 0.06 GiB and 0.00 GiB"):
        export_gguf(ExportSettings(adapter=adapter_of["llama2"], out=tmp_path / "x.gguf"))


def test_quantize_types_without_llama_quantize_say_what_to_install(adapter_of, tmp_path, monkeypatch):
    from training.adapters.gguf import llamacpp

    monkeypatch.setattr(llamacpp, "find_binary", lambda name: None)
    monkeypatch.setattr(export, "load_merged", lambda *a: pytest.fail("the model was loaded"))
    with pytest.raises(ValueError, match=r"(?s)^--type q4_k_m: llama.cpp's `llama-quantize` was not found.*"
                                         r"python -m training build-llama-cpp"):
        export_gguf(ExportSettings(adapter=adapter_of["llama2"], out=tmp_path / "x.gguf", gguf_type="q4_k_m"))
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_write_leaves_no_file(adapter_of, tmp_path, monkeypatch):
    from gguf import GGUFWriter

    written = []

    def write_then_stop(self, tensor, *args):
        written.append(tensor.nbytes)
        if len(written) == 3:
            raise KeyboardInterrupt
        return original(self, tensor, *args)

    original = GGUFWriter.write_tensor_data
    monkeypatch.setattr(GGUFWriter, "write_tensor_data", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        export_gguf(ExportSettings(adapter=adapter_of["llama2"], out=tmp_path / "x.gguf"))
    assert list(tmp_path.iterdir()) == []


def test_cli_prints_refusals_and_places_the_file_in_a_webui(adapter_of, tmp_path, capsys):
    assert main(["export-gguf", str(adapter_of["llama2"]), "--out", str(tmp_path / "x.gguf"), "--type", "f8"]) == 1
    assert "--type 'f8' is not supported" in capsys.readouterr().err
    webui = tmp_path / "webui"
    (webui / "user_data").mkdir(parents=True)
    (webui / "server.py").write_text("")
    out = tmp_path / "out" / "llama2-prueba-q8_0.gguf"
    assert main(["export-gguf", str(adapter_of["llama2"]), "--out", str(out), "--type", "q8_0",
                 "--webui", str(webui)]) == 0
    placed = webui / "user_data" / "models" / out.name
    assert sha256_file(placed) == sha256_file(out) == read_gguf_record(placed)["sha256"]
    assert "exported" in capsys.readouterr().out


DEMO_ADAPTER = ROOT / "loras" / "gemma3-270m-fusionado"


def demo_model_dir() -> Path:
    """The demo model, Gemma-3-270M (fetch-demo-model), cached across runs: $SPANISH_FT_DEMO_MODEL or
    ~/.cache/spanish_ft/gemma3-270m."""
    from training.demo.model import fetch_demo_model

    default = Path.home() / ".cache" / "spanish_ft" / "gemma3-270m"
    return fetch_demo_model(Path(os.environ.get("SPANISH_FT_DEMO_MODEL", default)), source="gemma3-270m")


@pytest.mark.llamacpp
def test_the_shipped_fused_demo_adapter_exports_to_f16_and_q8_0(tmp_path, one_torch_thread, request):
    """Opt-in with the real llama.cpp checks (SPANISH_FT_LLAMA_CPP_TEST=1 or -m llamacpp): the real Gemma-3-270M
    export takes about 4 minutes (a 552 MB f16 file, a 262k-token vocabulary); the tiny Gemma 3 above checks the
    same layout in every run."""
    if os.environ.get("SPANISH_FT_LLAMA_CPP_TEST") != "1" and "llamacpp" not in (request.config.getoption("-m") or ""):
        pytest.skip("the real demo export is checked with the llama.cpp tests: set SPANISH_FT_LLAMA_CPP_TEST=1")
    base, adapter = demo_model_dir(), DEMO_ADAPTER
    files = {kind: export_gguf(ExportSettings(adapter=adapter, out=tmp_path / f"gemma3-270m-fusionado-{kind}.gguf",
                                              gguf_type=kind, base=str(base)))
             for kind in ("f16", "q8_0")}
    template = ROOT / FAMILIES["gemma3"].template_file
    measured = compare(base, adapter, files, template)
    assert measured["f16"][0] < F16_MAX_RELATIVE_ERROR and measured["q8_0"][1] >= Q8_0_MIN_TOP1
    assert_vocabulary_in_file(files["f16"], AutoTokenizer.from_pretrained(base), "<end_of_turn>")
    if TRANSFORMERS_READS_GGUF_TOKENIZERS:
        from_gguf = AutoTokenizer.from_pretrained(tmp_path, gguf_file=files["f16"].name)
        text = load_template(template).render(CONVERSATION)
        assert from_gguf(text).input_ids == AutoTokenizer.from_pretrained(base)(text).input_ids
        assert from_gguf.eos_token == "<end_of_turn>"
    metadata = gguf_metadata(files["q8_0"])
    assert metadata["tokenizer.ggml.pre"] == "default" and metadata["tokenizer.ggml.add_space_prefix"] is False
    assert metadata[METADATA_KEYS["template"]] == "spanish_ft-Gemma" and metadata["general.license"] == "gemma"
    assert metadata["gemma3.attention.sliding_window_pattern"] == 6 and metadata["gemma3.rope.freq_base_swa"] == 1e4
    print(json.dumps({kind: path.stat().st_size for kind, path in files.items()}))


def test_llama_quantize_types_go_through_an_f16_file_that_is_removed(adapter_of, tmp_path, monkeypatch):
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "bin" / "llama-quantize"  # stands in for llama.cpp's: copies its input, logs its arguments
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$@" > {calls}\ncp "$1" "$2"\n')
    fake.chmod(0o755)
    from training.adapters.gguf import llamacpp

    monkeypatch.setattr(llamacpp, "find_binary", lambda name: fake)
    out = export_gguf(ExportSettings(adapter=adapter_of["falcon"], out=tmp_path / "out" / "falcon-q4_k_m.gguf",
                                     gguf_type="q4_k_m"))
    source, target, kind = calls.read_text().split()
    assert kind == "Q4_K_M" and Path(source).name.startswith(".falcon-q4_k_m.gguf.tmp-") and target.endswith(".q4_k_m")
    assert sorted(p.name for p in out.parent.iterdir()) == ["falcon-q4_k_m.gguf", "falcon-q4_k_m.gguf.json"]
    assert gguf_metadata(out)["general.file_type"] == 1  # what the fake left: the f16 file llama-quantize reads
    assert read_gguf_record(out)["gguf_type"] == "q4_k_m"


def test_dequantized_nf4_export_computes_what_the_4bit_base_and_adapter_computed(adapter_of, tiny_model_dirs, tmp_path,
                                                                               one_torch_thread):
    base, adapter = tiny_model_dirs["mistral"], adapter_of["mistral"]
    out = export_gguf(ExportSettings(adapter=adapter, out=tmp_path / "nf4.gguf", gguf_type="f16", dequantized_nf4=True))
    ids = prompt_ids(AutoTokenizer.from_pretrained(base), ROOT / FAMILIES["mistral"].template_file)
    with torch.no_grad():
        trained_against = PeftModel.from_pretrained(load_base(base, "mistral", nf4=True), adapter)(ids).logits[0]
    assert relative_error(gguf_logits(out, ids), trained_against) < F16_MAX_RELATIVE_ERROR
    assert relative_error(reference_logits(base, adapter, ids), trained_against) > 1e-2  # NF4 made a difference
    assert read_gguf_record(out)["dequantized_nf4"] is True


def test_a_missing_template_or_an_unknown_tokenizer_is_refused_before_loading(adapter_of, tmp_path, monkeypatch):
    import shutil

    adapter = shutil.copytree(adapter_of["falcon"], tmp_path / "falcon-otro")
    record = json.loads((adapter / "spanish_ft_record.json").read_text())
    record["template"]["file"] = "instruction-templates/no-existe.yaml"
    (adapter / "spanish_ft_record.json").write_text(json.dumps(record))
    monkeypatch.setattr(export, "load_merged", lambda *a: pytest.fail("the model was loaded"))
    with pytest.raises(ValueError, match=r"instruction template .*no-existe.yaml .* not found .*--template"):
        export_gguf(ExportSettings(adapter=adapter, out=tmp_path / "x.gguf"))
    from training.adapters.gguf import vocab as gguf_vocab

    monkeypatch.setattr(gguf_vocab, "PRE_BY_STEPS", {})  # a byte-level tokenizer llama.cpp has no regex for
    with pytest.raises(ValueError, match=r"no pre-tokenizer known to match this tokenizer's steps \(ByteLevel\)"):
        export_gguf(ExportSettings(adapter=adapter, out=tmp_path / "x.gguf",
                                   template=ROOT / FAMILIES["falcon"].template_file))
    assert list(tmp_path.iterdir()) == [adapter]
