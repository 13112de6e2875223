"""Opt-in: the bundle in a real text-generation-webui (set TGW_DIR to a webui checkout).

TGW_PYTHON names the webui's Python (default: this one). The test copies the webui to a
temporary folder (it never touches TGW_DIR itself), installs the bundle with install.py,
adds a tiny llama model and tiny adapters with spanish_ft training records
(tests/webui/scratch_webui.py), starts the webui on 127.0.0.1 on the CPU with the model,
`--lora llama2-fusionado` and the extension, and checks:
- the prompt the webui builds in instruct mode (/v1/internal/chat-prompt) equals
  `python -m training render` for the same conversation, for every shipped template;
- the extension loads, applies the adapter's profile at start-up, reads its params from
  settings.yaml, and warns in the console when two adapters are loaded through the API;
- in headless Chromium (when Playwright and /usr/bin/chromium are there): profile, an instruct
  chat, guard, comparison and memory panel, as a user drives them (tests/webui/ui_flows.py).

The demo check (tests named test_demo_*, also marked slow; `-k demo` runs them alone) does the
same with the CPU demo model: Gemma-3-270M (SPANISH_FT_DEMO_MODEL names a converted folder to
copy; otherwise `fetch-demo-model` writes one into a cache in the temp folder, about a minute)
and the bundle's shipped loras/gemma3-270m-* adapters (skipped until they are there), started
with `--lora gemma3-270m-fusionado`: the adapter's profile (template and preset spanish_ft-Gemma)
is applied at start-up, and an instruct chat through /v1/chat/completions with that preset
answers "¿Cuál es la capital de Ecuador?" in Spanish, naming Quito, and stops by itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "webui"))
from lineups import DEMO, TINY  # noqa: E402
from scratch_webui import demo_model_dir, prepare_demo_webui, prepare_webui, running_webui  # noqa: E402

pytestmark = pytest.mark.webui
ROOT = Path(__file__).resolve().parents[1]
TGW_DIR = os.environ.get("TGW_DIR")
CONVERSATION = [
    {"role": "user", "content": "¿Cuál es la capital de Ecuador?"},
    {"role": "assistant", "content": "La capital de Ecuador es Quito."},
    {"role": "user", "content": "¿Qué dice el artículo 71 de la Constitución?"},
]
# settings.yaml overrides of the extension's params (`<extension>-<key>`, modules/extensions.py)
SETTINGS = "spanish_ft-compare_seed: 7\nspanish_ft-memory_rank: 8\n"


def post(url: str, body: dict, timeout_s: int = 120) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def webui(tmp_path_factory):
    if not TGW_DIR:
        pytest.skip("set TGW_DIR to a text-generation-webui checkout to run the integration test")
    root = prepare_webui(Path(TGW_DIR), tmp_path_factory.mktemp("tgw") / "webui", settings=SETTINGS)
    python = os.environ.get("TGW_PYTHON", sys.executable)
    with running_webui(root, python, "--lora", TINY.fused) as running:
        yield {"api": running.api, "ui": running.ui, "root": root, "log": running.log}


def ui_values(webui) -> dict:
    """The start values of the page's labelled controls, as the browser gets them (/config)."""
    components = get(webui["ui"] + "/config")["components"]
    return {c["props"].get("label"): c["props"].get("value") for c in components if c.get("props")}


def render_cli(template: Path, tmp_path: Path) -> str:
    return render_conversation(template, CONVERSATION, tmp_path)


def render_conversation(template: Path, messages: list[dict], tmp_path: Path) -> str:
    conversation = tmp_path / "conversation.json"
    conversation.write_text(json.dumps(messages, ensure_ascii=False), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "training", "render", str(template), str(conversation),
                           "--generation-prompt"], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.mark.parametrize("template", sorted((ROOT / "instruction-templates").glob("*.yaml")), ids=lambda p: p.stem)
def test_webui_instruct_prompt_equals_render_cli(webui, template, tmp_path):
    body = {"messages": CONVERSATION, "mode": "instruct", "instruction_template": template.stem, "max_tokens": 16}
    webui_prompt = post(webui["api"] + "/v1/internal/chat-prompt", body)["prompt"]
    assert webui_prompt == render_cli(template, tmp_path)


def test_extension_loaded_without_errors(webui):
    log = webui["log"].read_text()
    assert 'Loading the extension "spanish_ft"' in log
    assert "Failed to load the extension" not in log


def test_adapter_given_at_startup_gets_its_profile(webui, tmp_path):
    """--lora llama2-fusionado: the API's default instruct template is the adapter's."""
    assert_profile_at_startup(webui, TINY, tmp_path)


def assert_profile_at_startup(webui, lineup, tmp_path: Path) -> None:
    """The log says so, the page starts with the preset and the template, API chats get the template."""
    assert (f"spanish_ft: al inicio (--lora). Perfil de «{lineup.fused}» aplicado: plantilla «{lineup.template}», "
            f"preset «{lineup.preset}», modo instruct") in webui["log"].read_text()
    values = ui_values(webui)
    assert values["Preset"] == lineup.preset and values["Instruction template"] == lineup.template_text()
    body = {"messages": CONVERSATION, "mode": "instruct", "max_tokens": 16}
    prompt = post(webui["api"] + "/v1/internal/chat-prompt", body)["prompt"]
    assert prompt == render_cli(ROOT / "instruction-templates" / f"{lineup.template}.yaml", tmp_path)


def test_params_are_read_from_settings_yaml(webui):
    values = ui_values(webui)
    assert values["Semilla"] == 7 and values["Rango LoRA (r)"] == 8


def chat(webui, lineup=TINY, max_tokens: int = 4, timeout_s: int = 120) -> dict:
    """An instruct chat through the API with the line-up's template and preset; returns the response."""
    body = {"messages": CONVERSATION[:1], "mode": "instruct", "instruction_template": lineup.template,
            "preset": lineup.preset, "seed": 1, "max_tokens": max_tokens}
    response = post(webui["api"] + "/v1/chat/completions", body, timeout_s)
    assert response["choices"]
    return response


def test_two_adapters_through_the_api_are_reported_and_the_fused_adapter_fixes_it(webui):
    guard = "spanish_ft: Has elegido"
    try:  # the webui crashes on two equal-rank adapters, or keeps only the first when it sees other ranks
        post(webui["api"] + "/v1/internal/lora/load", {"lora_names": list(TINY.singles)})
    except urllib.error.HTTPError:
        pass
    chat(webui)
    log = webui["log"].read_text()
    warning = log[log.index(guard):]
    assert all(name in warning[:300] for name in TINY.singles) and "/v1/internal/lora/unload" in warning
    post(webui["api"] + "/v1/internal/lora/unload", {})
    post(webui["api"] + "/v1/internal/lora/load", {"lora_names": [TINY.fused]})
    assert get(webui["api"] + "/v1/internal/model/info")["lora_names"] == [TINY.fused]
    seen = len(webui["log"].read_text())
    chat(webui)
    assert guard not in webui["log"].read_text()[seen:]
    assert "la plantilla en uso no es" not in webui["log"].read_text()[seen:]  # the adapter's own template


def memory_cli(config: Path, method: str, bits: int, seq_len: int, batch: int, rank: int) -> dict:
    command = [sys.executable, "-m", "training", "memory", str(config), "--method", method, "--bits", str(bits),
               "--seq-len", str(seq_len), "--batch", str(batch), "--rank", str(rank), "--json"]
    return json.loads(subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True).stdout)


def test_user_paths_in_a_browser(webui):
    """Profile, chat, Fuentes, guard, comparison and memory panel, driven in headless Chromium like a user would."""
    pytest.importorskip("playwright")
    if not shutil.which("chromium") and not Path("/usr/bin/chromium").exists():
        pytest.skip("no Chromium (apt-get install chromium)")
    import ui_flows

    sys.path.insert(0, str(ROOT / "extensions" / "spanish_ft"))
    from spanish_ft_ext.memory import SCENARIOS, gib

    with ui_flows.browser_page(webui["ui"]) as page:
        ui_flows.flow_profile(page, TINY, adapter=TINY.singles[0])
        ui_flows.flow_chat(page, max_new_tokens=16)  # the chat the README's screenshot shows
        ui_flows.flow_profile_kept(page)
        ui_flows.flow_guard(page, webui["api"], TINY)  # ends with an exact fusion of the two adapters loaded
        ui_flows.flow_fuentes(page, max_new_tokens=8)  # the tiny model's answer is noise; its sources are not
        export = ui_flows.flow_compare(page, webui["api"])
        table = ui_flows.flow_memory(page)
    assert "**Pregunta:** " + ui_flows.QUESTION in export and "- semilla: `7`" in export
    for name in ("modelo base (sin adaptadores)", *TINY.singles, TINY.fused):
        assert f"| {name} |" in export
    rows = {line.split("\t")[0]: line.split("\t") for line in table.splitlines()}
    config = webui["root"] / "user_data" / "models" / TINY.model / "config.json"
    for label, method, bits in SCENARIOS:
        assert rows[label][-1] == gib(memory_cli(config, method, bits, 2048, 1, 8)["total_bytes"]), label


# The demo check: the CPU demo model and the shipped demo adapters in the real webui.
SPANISH_WORDS = {"la", "el", "de", "es", "capital", "ciudad", "en", "del", "y", "su"}


@pytest.fixture(scope="module")
def demo_webui(tmp_path_factory):
    if not TGW_DIR:
        pytest.skip("set TGW_DIR to a text-generation-webui checkout to run the integration test")
    if not (ROOT / "loras" / DEMO.fused).is_dir():
        pytest.skip(f"the bundle ships no loras/{DEMO.fused} yet")
    root = prepare_demo_webui(Path(TGW_DIR), tmp_path_factory.mktemp("tgw-demo") / "webui", demo_model_dir())
    python = os.environ.get("TGW_PYTHON", sys.executable)
    with running_webui(root, python, "--lora", DEMO.fused, model=DEMO.model) as running:
        yield {"api": running.api, "ui": running.ui, "root": root, "log": running.log}


@pytest.mark.slow
def test_demo_gemma_gets_its_profile_at_startup(demo_webui, tmp_path):
    """--lora gemma3-270m-fusionado: template and preset spanish_ft-Gemma, instruct mode, no warning."""
    assert_profile_at_startup(demo_webui, DEMO, tmp_path)
    log = demo_webui["log"].read_text()
    assert "Failed to load the extension" not in log
    assert not re.search(r"WARNING +spanish_ft:", log)  # e.g. a base model of another shape than the record's


@pytest.mark.slow
def test_demo_gemma_answers_in_spanish(demo_webui):
    """¿Cuál es la capital de Ecuador? with the bundle's template and preset: Quito, in Spanish, ended by the model."""
    max_tokens = 120
    response = chat(demo_webui, DEMO, max_tokens=max_tokens, timeout_s=900)
    answer = response["choices"][0]["message"]["content"]
    print(f"{DEMO.model} + {DEMO.fused}: {answer!r}")
    assert response["choices"][0]["finish_reason"] == "stop", answer
    assert response["usage"]["completion_tokens"] < max_tokens, answer
    assert "Quito" in answer
    words = set(re.findall(r"\w+", answer.lower()))
    assert len(words & SPANISH_WORDS) >= 2, answer
    log = demo_webui["log"].read_text()
    assert "<start_of_turn>model" in log[log.rindex("PROMPT="):]  # the Gemma template built the prompt


@pytest.mark.slow
def test_demo_fuentes_prompt_is_the_training_rendering_and_the_answer_cites_only_it(demo_webui, tmp_path):
    """A legal question through the API with the fused adapter: the prompt the webui gives the model holds the
    user's turn exactly as training rendered it (the articles, then the question), in the bundle's template;
    the answer cites no article that was not among them."""
    sys.path.insert(0, str(ROOT))
    from training.adapters.record import read_record
    from training.retrieval.fuentes import citation_check, grounded_turn, sources_for

    question = "¿Qué dice el artículo 71 de la Constitución?"
    k = read_record(ROOT / "loras" / DEMO.fused).fuentes_k or 3  # the extension's k: the record's, else 3
    hits, absent = sources_for(question, k)
    assert [(h.norma, h.articulo) for h in hits][0] == ("Constitución de la República del Ecuador", "71")
    expected = render_conversation(ROOT / "instruction-templates" / f"{DEMO.template}.yaml",
                                   [{"role": "user", "content": grounded_turn(question, hits, absent)}], tmp_path)
    seen = len(demo_webui["log"].read_text())
    body = {"messages": [{"role": "user", "content": question}], "mode": "instruct",
            "instruction_template": DEMO.template, "preset": DEMO.preset, "seed": 1, "max_tokens": 200}
    response = post(demo_webui["api"] + "/v1/chat/completions", body, 900)
    answer = response["choices"][0]["message"]["content"]
    print(f"{DEMO.fused}: {answer!r}")
    log = demo_webui["log"].read_text()[seen:]
    prompt = log[log.index("PROMPT=") + len("PROMPT="):]
    # the webui prints the prompt decoded from its token ids, <bos> included
    assert expected.removeprefix("<bos>") in prompt, prompt[:3000]
    check = citation_check(answer, hits)
    assert not check.unverified, f"cites articles it was not given: {check.unverified}: {answer!r}"
