"""The shipped instruction templates and the webui-identical renderer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from training.templates import TemplateFileError, load_template, make_webui_environment

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = sorted((ROOT / "instruction-templates").glob("*.yaml"))
WEBUI_TEMPLATE_NAMES = {"Alpaca", "ChatML", "Llama-v3", "Mistral", "Open Assistant", "Vicuna-v1.1"}

SYS = "Responde como un abogado ecuatoriano."
Q1, A1 = "¿Cuál es la capital de Ecuador?", "La capital de Ecuador es Quito."
Q2, A2 = "¿Y la de Perú?", "Lima."
Q3, A3 = "Gracias.", "De nada."


def conversations():
    """1-, 2- and 3-turn conversations, with and without a system message."""
    turns = [(Q1, A1), (Q2, A2), (Q3, A3)]
    for n in (1, 2, 3):
        messages = []
        for q, a in turns[:n]:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        yield messages
        yield [{"role": "system", "content": SYS}, *messages]


def test_templates_ship_one_per_family_with_unclashing_names():
    names = {path.stem for path in TEMPLATES}
    from training.families import FAMILIES

    assert names == {Path(family.template_file).stem for family in FAMILIES.values()}  # one per family, no other
    assert not names & WEBUI_TEMPLATE_NAMES


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_template_is_webui_yaml_and_compiles_with_webui_settings(path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert set(data) == {"instruction_template"}
    # The webui's environment: sandboxed, trim/lstrip blocks, loopcontrols.
    env = make_webui_environment()
    assert env.trim_blocks and env.lstrip_blocks
    assert "jinja2.ext.LoopControlExtension" in env.extensions
    env.from_string(data["instruction_template"])
    load_template(path)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_prompt_is_prefix_and_segments_rebuild_the_conversation(path):
    template = load_template(path)
    for messages in conversations():
        full = template.render(messages)
        segments = template.split(messages)
        assert "".join(s.text for s in segments) == full
        answers = [s.text for s in segments if s.trained]
        assert len(answers) == sum(m["role"] == "assistant" for m in messages)
        for i, message in enumerate(messages):
            if message["role"] == "assistant":
                prompt = template.render(messages[:i], add_generation_prompt=True)
                assert full.startswith(prompt)
                assert message["content"] in full[len(prompt):]


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_default_spanish_system_message_when_none_given(path):
    template = load_template(path)
    plain = template.render([{"role": "user", "content": Q1}], add_generation_prompt=True)
    assert "español" in plain
    custom = template.render([{"role": "system", "content": SYS}, {"role": "user", "content": Q1}], True)
    assert SYS in custom and "español" not in custom


def golden(name):
    return load_template(ROOT / "instruction-templates" / f"{name}.yaml")


TWO_TURNS = [
    {"role": "system", "content": SYS},
    {"role": "user", "content": Q1},
    {"role": "assistant", "content": A1},
    {"role": "user", "content": Q2},
]


def test_llama2_chat_matches_meta_documented_format():
    # Meta's reference: f"{B_INST} {prompt} {E_INST} {answer} " with <s> and </s> around each exchange,
    # the system prompt wrapped in <<SYS>> inside the first instruction.
    expected = f"<s>[INST] <<SYS>>\n{SYS}\n<</SYS>>\n\n{Q1} [/INST] {A1} </s><s>[INST] {Q2} [/INST]"
    assert golden("spanish_ft-Llama-2-chat").render(TWO_TURNS, add_generation_prompt=True) == expected


def test_mistral_matches_mistral_documented_format():
    # Mistral: <s>[INST] Instruction [/INST] Model answer</s>[INST] Follow-up instruction [/INST]
    expected = f"<s>[INST] {SYS}\n\n{Q1} [/INST] {A1}</s>[INST] {Q2} [/INST]"
    assert golden("spanish_ft-Mistral").render(TWO_TURNS, add_generation_prompt=True) == expected


def test_falcon_plain_role_format():
    expected = f"{SYS}\n\nUsuario: {Q1}\nAsistente: {A1}<|endoftext|>\nUsuario: {Q2}\nAsistente:"
    assert golden("spanish_ft-Falcon").render(TWO_TURNS, add_generation_prompt=True) == expected


def test_gemma_matches_gemma_turn_format():
    # Gemma 3: no system role; its chat template puts the system text first in the first user turn
    expected = (f"<bos><start_of_turn>user\n{SYS}\n\n{Q1}<end_of_turn>\n<start_of_turn>model\n{A1}<end_of_turn>\n"
                f"<start_of_turn>user\n{Q2}<end_of_turn>\n<start_of_turn>model\n")
    assert golden("spanish_ft-Gemma").render(TWO_TURNS, add_generation_prompt=True) == expected


def test_answer_segments_end_with_the_end_of_turn():
    ends = {"spanish_ft-Mistral": "</s>", "spanish_ft-Llama-2-chat": " </s>", "spanish_ft-Falcon": "<|endoftext|>",
            "spanish_ft-Gemma": "<end_of_turn>\n"}
    for name, end in ends.items():
        answers = [s.text for s in golden(name).split(TWO_TURNS[:3]) if s.trained]
        assert answers == [(" " if name != "spanish_ft-Gemma" else "") + A1 + end]


def test_message_text_is_stripped_like_the_webui_history():
    template = golden("spanish_ft-Mistral")
    padded = [{"role": "user", "content": f"  {Q1}\n"}]
    assert template.render(padded, True) == template.render([{"role": "user", "content": Q1}], True)


def test_bad_inputs_name_the_problem(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("instruction_template: |-\n  {%- for m in messages %}{{ m }\n", encoding="utf-8")
    with pytest.raises(TemplateFileError, match="bad.yaml.*does not compile"):
        load_template(bad_yaml)
    not_webui = tmp_path / "other.yaml"
    not_webui.write_text("template: x\n", encoding="utf-8")
    with pytest.raises(TemplateFileError, match="other.yaml.*instruction_template"):
        load_template(not_webui)
    with pytest.raises(TemplateFileError, match="message 2 has role 'bot'"):
        golden("spanish_ft-Mistral").render([{"role": "user", "content": "a"}, {"role": "bot", "content": "b"}])


def run_render_cli(*args):
    return subprocess.run([sys.executable, "-m", "training", "render", *map(str, args)],
                          cwd=ROOT, capture_output=True, text=True, encoding="utf-8")


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.stem)
def test_render_cli_prints_exactly_the_rendering(path, tmp_path):
    conversation = tmp_path / "conv.json"
    conversation.write_text(json.dumps(TWO_TURNS, ensure_ascii=False), encoding="utf-8")
    done = run_render_cli(path, conversation, "--generation-prompt")
    assert done.returncode == 0, done.stderr
    assert done.stdout == load_template(path).render(TWO_TURNS, add_generation_prompt=True)


def test_render_cli_reports_bad_conversation_file(tmp_path):
    conversation = tmp_path / "conv.json"
    conversation.write_text("[{\"role\": \"user\"", encoding="utf-8")
    done = run_render_cli(TEMPLATES[0], conversation)
    assert done.returncode == 1
    assert "conv.json: not a valid UTF-8 JSON file" in done.stderr
