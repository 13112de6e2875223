"""Loss on the answers only, and training prompts identical to the webui's, for every template."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from tiny import build_tokenizer

from training.data.tokens import IGNORE_INDEX, BoundaryError, PadCollator, encode_segments, webui_encode
from training.model.load import choose_pad_token
from training.templates import load_template

# template -> (tokenizer shape, end-of-turn token the answer must end with)
CASES = {
    "spanish_ft-Mistral": ("llama", "</s>"),
    "spanish_ft-Llama-2-chat": ("llama", "</s>"),
    "spanish_ft-Falcon": ("falcon", "<|endoftext|>"),
    "spanish_ft-Gemma": ("gemma", "<end_of_turn>"),
}
CONVERSATION = [
    {"role": "system", "content": "Sé breve."},
    {"role": "user", "content": "¿Cuál es la capital de Ecuador?"},
    {"role": "assistant", "content": "La capital de Ecuador es Quito."},
    {"role": "user", "content": "Calcula 12 más 30."},
    {"role": "assistant", "content": "El resultado es 42."},
]
ANSWERS = [m["content"] for m in CONVERSATION if m["role"] == "assistant"]


@pytest.fixture(scope="module")
def tokenizers():
    return {shape: build_tokenizer(shape) for shape in ("llama", "falcon", "gemma")}


def webui_oracle(tokenizer, prompt: str) -> list[int]:
    """modules/text_generation.py `encode` in instruct mode (add_bos_token=False), restated."""
    input_ids = tokenizer.encode(str(prompt), return_tensors="pt", add_special_tokens=True)
    bos = tokenizer.bos_token_id
    while bos is not None and len(input_ids[0]) > 1 and input_ids[0][0] == bos and input_ids[0][1] == bos:
        input_ids = input_ids[:, 1:]
    return input_ids[0].tolist()


def labelled_runs(labels: list[int]) -> list[tuple[int, int]]:
    runs, start = [], None
    for i, label in enumerate(labels + [IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    return runs


@pytest.mark.parametrize("name", CASES)
def test_only_answers_and_their_end_of_turn_carry_labels(name, tokenizers, repo_root):
    shape, end_of_turn = CASES[name]
    tokenizer = tokenizers[shape]
    template = load_template(repo_root / "instruction-templates" / f"{name}.yaml")
    encoded = encode_segments(tokenizer, template.split(CONVERSATION))
    runs = labelled_runs(encoded.labels)
    assert len(runs) == len(ANSWERS)  # every assistant turn is trained
    turn_ends = [i for i, m in enumerate(CONVERSATION) if m["role"] == "assistant"]
    for (start, end), answer, turn in zip(runs, ANSWERS, turn_ends, strict=True):
        run = encoded.input_ids[start:end]
        assert encoded.labels[start:end] == run
        assert run[-1] == tokenizer.convert_tokens_to_ids(end_of_turn)
        assert tokenizer.decode(run[:-1]).strip() == answer
        # everything before the answer is exactly the webui's encoding of its prompt
        prompt = template.render(CONVERSATION[:turn], add_generation_prompt=True)
        assert encoded.input_ids[:start] == webui_oracle(tokenizer, prompt)
    assert encoded.input_ids == webui_oracle(tokenizer, template.render(CONVERSATION))


def test_training_prompt_equals_the_render_command(tmp_path, tokenizers, repo_root):
    template_path = repo_root / "instruction-templates" / "spanish_ft-Mistral.yaml"
    conversation = tmp_path / "conversation.json"
    conversation.write_text(json.dumps(CONVERSATION[:-1], ensure_ascii=False), encoding="utf-8")
    rendered = subprocess.run(
        [sys.executable, "-m", "training", "render", str(template_path), str(conversation), "--generation-prompt"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=True,
        timeout=60,
    ).stdout
    segments = load_template(template_path).split(CONVERSATION)
    assert "".join(s.text for s in segments[:-1]) == rendered  # all but the last answer
    tokenizer = tokenizers["llama"]
    encoded = encode_segments(tokenizer, segments)
    last_answer_start = labelled_runs(encoded.labels)[-1][0]
    assert encoded.input_ids[:last_answer_start] == webui_oracle(tokenizer, rendered)
    assert encoded.input_ids[0] == tokenizer.bos_token_id != encoded.input_ids[1]  # the double BOS collapsed


def test_a_template_that_splits_a_token_is_refused(tmp_path, tokenizers):
    path = tmp_path / "glued.yaml"
    path.write_text("instruction_template: |-\n  {%- for m in messages -%}{{- m['content'] -}}{%- endfor -%}\n")
    tokenizer = tokenizers["llama"]
    assert webui_encode(tokenizer, ["Hol"])[0] != webui_encode(tokenizer, ["Hola"])[0][:2]  # "Hola" is one token
    segments = load_template(path).split([{"role": "user", "content": "Hol"}, {"role": "assistant", "content": "a"}])
    with pytest.raises(BoundaryError, match="token boundary"):
        encode_segments(tokenizer, segments)


def test_collator_pads_without_masking_eos_even_when_pad_is_eos(tokenizers):
    eos = tokenizers["llama"].eos_token_id
    rows = [
        {"input_ids": [1, 5, 6, eos], "labels": [-100, -100, 6, eos]},
        {"input_ids": [1, 7, eos], "labels": [-100, 7, eos]},
    ]
    batch = PadCollator(pad_token_id=eos)(rows)
    assert batch["labels"].tolist() == [[-100, -100, 6, eos], [-100, 7, eos, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert batch["input_ids"][1, 3].item() == eos


def test_collator_refuses_a_batch_with_nothing_to_learn():
    with pytest.raises(ValueError, match="no answer token to learn"):
        PadCollator(pad_token_id=0)([{"input_ids": [1, 2], "labels": [-100, -100]}])


@pytest.mark.parametrize("shape", ["llama", "falcon"])
def test_pad_token_is_never_eos(shape, tokenizers):
    tokenizer = build_tokenizer(shape)
    tokenizer.pad_token = tokenizer.eos_token
    choose_pad_token(tokenizer)
    assert tokenizer.pad_token_id is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.pad_token_id != tokenizer.bos_token_id
    assert len(tokenizer) == len(tokenizers[shape])  # no token added: the vocabulary matches the base model
