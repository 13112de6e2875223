"""Answers and losses of a model (or one of its adapters) on conversations, as the webui sees them.

Prompts are rendered with the instruction template and encoded exactly like the webui
(training.data.tokens.webui_encode); generation is greedy and stops at the tokenizer's EOS, as
the webui does. Used by `python -m training evaluate` and by the extension's comparison tab.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from training.data.tokens import IGNORE_INDEX, Encoded, PadCollator, webui_encode
from training.templates import InstructionTemplate


@dataclass(frozen=True)
class Answer:
    text: str
    new_tokens: int
    seconds: float


@contextlib.contextmanager
def active_variant(model, adapter: str | None) -> Iterator[None]:
    """Run with one adapter of a PeftModel active, or with all adapters disabled (None)."""
    if adapter is None:
        if hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                yield
        else:
            yield
        return
    model.set_adapter(adapter)
    yield


def _left_padded(id_lists: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in id_lists)
    input_ids = torch.full((len(id_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(id_lists), width), dtype=torch.long)
    for row, ids in enumerate(id_lists):
        input_ids[row, width - len(ids):] = torch.tensor(ids)
        mask[row, width - len(ids):] = 1
    return input_ids, mask


@torch.no_grad()
def generate_answers(model, tokenizer, template: InstructionTemplate, conversations: list[list[dict]],
                     max_new_tokens: int = 96, batch_size: int = 8,
                     repetition_penalty: float | None = None) -> list[Answer]:
    """Greedy answers to each conversation (its last message is the user's question); with
    `repetition_penalty` (a preset's), the logits of tokens already in the prompt or the answer are
    penalised as transformers and the webui do (divided by it when positive, multiplied when negative)."""
    extra = {} if repetition_penalty in (None, 1.0) else {"repetition_penalty": float(repetition_penalty)}
    if extra:
        batch_size = 1  # left padding would count the pad token (often EOS) as already seen
    prompts = [template.render(messages, add_generation_prompt=True) for messages in conversations]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers: list[Answer] = []
    for start in range(0, len(prompts), batch_size):
        id_lists = webui_encode(tokenizer, prompts[start:start + batch_size])
        input_ids, mask = _left_padded(id_lists, pad_id)
        started = time.perf_counter()
        output = model.generate(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                                max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                                eos_token_id=tokenizer.eos_token_id, **extra)
        seconds = (time.perf_counter() - started) / len(id_lists)
        for row in output[:, input_ids.shape[1]:].tolist():
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id)]
            row = [token for token in row if token != pad_id]
            answers.append(Answer(tokenizer.decode(row, skip_special_tokens=True).strip(), len(row), seconds))
    return answers


def keeps_logits_by_index(model) -> bool:
    """Whether the model's forward takes `logits_to_keep` (transformers' CausalLM heads: an int or the positions)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


@torch.no_grad()
def answer_loss(model, rows: list[Encoded], batch_size: int = 8) -> dict:
    """Token-weighted mean cross-entropy on the answer tokens only, and its perplexity."""
    total, count = 0.0, 0
    by_index = keeps_logits_by_index(model)
    collate = PadCollator(pad_token_id=0)  # padded positions are masked and carry no label
    for start in range(0, len(rows), batch_size):
        batch = collate([{"input_ids": r.input_ids, "labels": r.labels} for r in rows[start:start + batch_size]])
        ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
        shifted = labels[:, 1:]
        # the LM head only where some row of the batch has an answer token to predict: a 262k-token
        # vocabulary (Gemma) makes full logits over the prompt most of the pass's time
        keep = (shifted != IGNORE_INDEX).any(dim=0).nonzero().squeeze(1)
        if by_index:
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                           logits_to_keep=keep.to(model.device)).logits.float()
        else:
            logits = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).logits.float()[:, keep]
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), shifted[:, keep].to(logits.device),
                                                   ignore_index=IGNORE_INDEX, reduction="sum")
        total += losses.item()
        count += int((shifted != IGNORE_INDEX).sum())
    if count == 0:
        raise ValueError("no answer token to score: every row was masked out")
    loss = total / count
    return {"answer_loss": loss, "perplexity": math.exp(min(loss, 50.0)), "answer_tokens": count}
