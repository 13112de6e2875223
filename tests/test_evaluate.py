"""Evaluation: losses, greedy answers and the report, on tiny models with answers known by construction."""

from __future__ import annotations

import json
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from training.adapters.record import RECORD_NAME
from training.data.tokens import webui_encode
from training.evaluate.evaluate import EvaluateSettings, adapter_template, evaluate
from training.evaluate.generate import active_variant, answer_loss, generate_answers
from training.evaluate.report import write_report
from training.model.load import choose_pad_token
from training.templates import load_template

TEMPLATE = "instruction-templates/spanish_ft-Llama-2-chat.yaml"
ROWS = [
    {"instruction": "¿Cuál es la capital de Ecuador?", "input": "", "output": "La capital de Ecuador es Quito."},
    {"instruction": "¿Qué protege el artículo 71?", "input": "", "output": "Según el artículo 71 de la Constitución, la naturaleza.",
     "fuente": {"norma": "Constitución de la República del Ecuador", "articulo": "71"}},
    {"instruction": "Calcula 12 más 30.", "input": "", "output": "12 más 30 es 42."},
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dirs):
    path = tiny_model_dirs["llama2"]
    tokenizer = AutoTokenizer.from_pretrained(path)
    choose_pad_token(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return path, model, tokenizer, load_template(TEMPLATE)


def make_adapter(base_path, out, seed: int, repo_root):
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_path), LoraConfig(r=4, target_modules="all-linear"))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    model.save_pretrained(out)
    template = {"name": "spanish_ft-Llama-2-chat", "file": TEMPLATE}
    (out / RECORD_NAME).write_text(json.dumps({"family": "llama2", "template": template}), encoding="utf-8")
    return out


def greedy_one_by_one(model, tokenizer, prompt: str, steps: int, penalty: float = 1.0) -> str:
    ids = webui_encode(tokenizer, [prompt])[0]
    new = []
    for _ in range(steps):
        logits = model(input_ids=torch.tensor([ids + new])).logits[0, -1].clone()
        for seen in set(ids + new):
            logits[seen] = logits[seen] / penalty if logits[seen] > 0 else logits[seen] * penalty
        token = int(logits.argmax())
        if token == tokenizer.eos_token_id:
            break
        new.append(token)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def test_batched_left_padded_generation_equals_token_by_token_greedy(tiny):
    _, model, tokenizer, template = tiny
    conversations = [[{"role": "user", "content": row["instruction"]}] for row in ROWS]
    answers = generate_answers(model, tokenizer, template, conversations, max_new_tokens=6, batch_size=3)
    for conversation, answer in zip(conversations, answers):
        prompt = template.render(conversation, add_generation_prompt=True)
        assert answer.text == greedy_one_by_one(model, tokenizer, prompt, 6)


def test_repetition_penalty_penalises_tokens_already_seen(tiny):
    _, model, tokenizer, template = tiny
    conversations = [[{"role": "user", "content": row["instruction"]}] for row in ROWS]
    plain = generate_answers(model, tokenizer, template, conversations, max_new_tokens=8, batch_size=3)
    penalised = generate_answers(model, tokenizer, template, conversations, max_new_tokens=8, batch_size=3,
                                 repetition_penalty=3.0)
    assert [a.text for a in plain] != [a.text for a in penalised]
    for conversation, answer in zip(conversations, penalised):
        prompt = template.render(conversation, add_generation_prompt=True)
        assert answer.text == greedy_one_by_one(model, tokenizer, prompt, 8, penalty=3.0)


def test_answer_loss_is_the_token_weighted_mean_over_answer_tokens(tiny):
    from training.data.conversations import encode_row

    _, model, tokenizer, template = tiny
    rows = [encode_row(row, "alpaca", tokenizer, template) for row in ROWS]
    total, count = 0.0, 0
    for row in rows:  # one row at a time, no padding: the reference computation
        logits = model(input_ids=torch.tensor([row.input_ids])).logits[0, :-1]
        labels = torch.tensor(row.labels[1:])
        keep = labels != -100
        total += torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum").item()
        count += int(keep.sum())
    scores = answer_loss(model, rows, batch_size=2)
    assert scores["answer_tokens"] == count
    assert scores["answer_loss"] == pytest.approx(total / count, rel=1e-5)
    assert scores["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)


def test_evaluate_scores_base_and_adapters_and_writes_the_report(tiny, tmp_path, repo_root):
    base_path, model, tokenizer, template = tiny
    adapters = [make_adapter(base_path, tmp_path / name, seed, repo_root) for seed, name in enumerate(["a", "b"])]
    split = tmp_path / "leyes-ec" / "test.jsonl"
    split.parent.mkdir()
    split.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS), encoding="utf-8")
    results = evaluate(EvaluateSettings(base=str(base_path), adapters=adapters, data=[str(split)], max_new_tokens=4))
    task = results["tasks"]["leyes-ec"]
    assert results["variants"] == ["base", "a", "b"]
    from training.data.conversations import encode_row

    plain = answer_loss(model, [encode_row(r, "alpaca", tokenizer, template) for r in ROWS])
    # The base variant (adapters disabled) is exactly the plain base model.
    assert task["scores"]["base"]["answer_loss"] == pytest.approx(plain["answer_loss"], rel=1e-5)
    # per answer character: the same nats over the characters of the reference answers
    chars = sum(len(r["output"]) for r in ROWS)
    assert task["scores"]["base"]["answer_chars"] == chars
    assert task["scores"]["base"]["answer_loss_per_char"] == pytest.approx(
        plain["answer_loss"] * plain["answer_tokens"] / chars, rel=1e-5)
    assert abs(task["scores"]["a"]["answer_loss"] - plain["answer_loss"]) > 1e-4  # the adapter is active
    assert 0 <= task["scores"]["a"]["citation_accuracy"] <= 1
    paths = write_report(results, tmp_path / "report")
    markdown = paths[0].read_text(encoding="utf-8")
    assert "## leyes-ec (3 held-out rows" in markdown and "| a |" in markdown and "loss per char ↓" in markdown
    assert json.loads(paths[1].read_text(encoding="utf-8"))["variants"] == ["base", "a", "b"]
    assert paths[2].stat().st_size > 1000


def test_retrieval_both_scores_each_variant_with_and_without_fuentes(tiny, tmp_path, repo_root):
    """--retrieval both: `<v>` as before and `<v>+fuentes` on prompts whose user turn is the extension's
    (training.retrieval.fuentes), the question shown as typed, grounding and recall scores added."""
    from training.data.conversations import encode_row
    from training.retrieval.fuentes import grounded_turn, sources_for

    base_path, model, tokenizer, template = tiny
    adapter = make_adapter(base_path, tmp_path / "a", 0, repo_root)
    rows = [*ROWS, {"instruction": "¿Cuántas horas dura la jornada máxima de trabajo?", "input": "",
                    "output": "Según el artículo 47 del Código del Trabajo, ocho horas diarias.",
                    "fuente": {"norma": "Código del Trabajo", "articulo": "47"}}]
    split = tmp_path / "leyes-ec" / "test.jsonl"
    split.parent.mkdir()
    split.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    results = evaluate(EvaluateSettings(base=str(base_path), adapters=[adapter], data=[str(split)], max_new_tokens=4,
                                        retrieval="both", fuentes_k=2))
    task = results["tasks"]["leyes-ec"]
    assert results["variants"] == ["base", "base+fuentes", "a", "a+fuentes"] and results["fuentes_k"] == 2
    assert task["questions"] == [row["instruction"] for row in rows]
    plain = task["scores"]["base"]
    grounded_rows = []
    for row in rows:
        hits, absent = sources_for(row["instruction"], 2)
        grounded_rows.append(dict(row, instruction=grounded_turn(row["instruction"], hits, absent)))
    expected = answer_loss(model, [encode_row(r, "alpaca", tokenizer, template) for r in grounded_rows])
    assert task["scores"]["base+fuentes"]["answer_loss"] == pytest.approx(expected["answer_loss"], rel=1e-5)
    assert task["scores"]["base+fuentes"]["answer_loss"] != pytest.approx(plain["answer_loss"], rel=1e-4)
    assert task["scores"]["a+fuentes"]["retrieval_recall"] == 0.5  # art. 47 found; "el artículo 71" names no norm
    assert "retrieval_recall" not in plain and set(task["answers"]) == set(results["variants"])
    with pytest.raises(ValueError, match="retrieval='sometimes'"):
        evaluate(EvaluateSettings(base=str(base_path), adapters=[adapter], data=[str(split)], retrieval="sometimes"))


def test_active_variant_restores_adapters(tiny, tmp_path, repo_root):
    from peft import PeftModel

    base_path, _, _, _ = tiny
    adapter = make_adapter(base_path, tmp_path / "x", 3, repo_root)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(adapter), adapter_name="x")
    ids = torch.tensor([[1, 5, 9, 12]])
    with_adapter = model(input_ids=ids).logits
    with active_variant(model, None):
        without = model(input_ids=ids).logits
    assert not torch.allclose(with_adapter, without)
    assert torch.allclose(model(input_ids=ids).logits, with_adapter)


def test_adapter_template_refuses_disagreeing_or_missing_templates(tmp_path):
    for name, file in (("one", TEMPLATE), ("two", "instruction-templates/spanish_ft-Mistral.yaml")):
        (tmp_path / name).mkdir()
        (tmp_path / name / RECORD_NAME).write_text(json.dumps({"template": {"file": file}}), encoding="utf-8")
    with pytest.raises(ValueError, match="different templates"):
        adapter_template([tmp_path / "one", tmp_path / "two"], None)
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="none: no template in its training record"):
        adapter_template([tmp_path / "none"], None)
    assert adapter_template([tmp_path / "one"], None).name == "spanish_ft-Llama-2-chat.yaml"


def test_citation_scores_split_questions_naming_the_article_from_questions_to_recall():
    from training.evaluate.evaluate import TaskData, citation_scores, names_its_article

    constitution = {"norma": "Constitución de la República del Ecuador", "articulo": "71"}
    coip = {"norma": "Código Orgánico Integral Penal", "articulo": "144"}
    assert names_its_article("¿Qué dice el artículo 71 de la Constitución?", constitution)
    assert not names_its_article("¿Qué dice el artículo 72 de la Constitución?", constitution)
    assert not names_its_article("¿Qué derechos tiene la naturaleza?", constitution)
    questions = ["¿Qué dice el artículo 71 de la Constitución?", "¿Qué derechos tiene la naturaleza?",
                 "¿Cómo se sanciona el homicidio?", "¿Cuál es la capital de Ecuador?"]
    task = TaskData("leyes-ec", "x.jsonl", [[{"role": "user", "content": q}] for q in questions],
                    ["", "", "", ""], [constitution, constitution, coip, None], [])
    texts = ["El artículo 71 de la Constitución reconoce a la naturaleza.",  # named, right
             "Según el artículo 72 de la Constitución, la naturaleza ...",  # recall, wrong article
             "El artículo 144 del COIP sanciona el homicidio.",  # recall, right
             "Quito."]  # no fuente: not counted
    scores = citation_scores(texts, task)
    assert scores["citation_accuracy"] == pytest.approx(2 / 3) and scores["citation_rows"] == 3
    assert scores["citation_accuracy_named"] == 1.0 and scores["citation_rows_named"] == 1
    assert scores["citation_accuracy_recall"] == 0.5 and scores["citation_rows_recall"] == 2
