"""Packing is exact: a packed row gives the padded batch's loss and LoRA gradients, on real NF4 models.

The reference for "the loss is the mean over answer tokens" is the evaluator's answer loss
on each conversation alone (batch of one, no padding, no packing), which shares no code path
with either collator or with the trainer's loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.data.batches import PackedCollator, choose_batching
from training.data.conversations import encode_row
from training.data.tokens import IGNORE_INDEX, Encoded, PadCollator
from training.evaluate.generate import answer_loss
from training.families import FAMILIES
from training.model.load import load_tokenizer
from training.templates import load_template

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROWS = [
    {"instruction": "¿Cuál es la capital de Ecuador?", "output": "La capital de Ecuador es Quito."},
    {"instruction": "Calcula 12 más 30.", "input": "Responde en una frase.", "output": "El resultado es 42."},
    {"instruction": "Traduce al español: The weather is nice today.", "output": "El clima está agradable hoy."},
    {"text": "Según el artículo 71 de la Constitución, la naturaleza tiene derecho a que se respete su existencia."},
]


def encoded_rows(tokenizer, template) -> list[Encoded]:
    """Conversations of different lengths (answer-only labels) and one plain text (every token trained)."""
    rows = [encode_row(row, "text" if "text" in row else "alpaca", tokenizer, template) for row in ROWS]
    assert len({len(r.input_ids) for r in rows}) == len(rows)  # padding really happens
    return rows


def as_features(rows: list[Encoded]) -> list[dict]:
    return [{"input_ids": r.input_ids, "labels": r.labels} for r in rows]


@pytest.fixture(scope="module")
def trainers(tiny_model_dirs, repo_root, tmp_path_factory):
    """{family: (trainer, rows)}: our trainer on each tiny NF4 model, LoRA dropout off for determinism."""
    from test_train import make_config

    from training.data.prepare import prepare_data
    from training.model.load import add_lora, compute_dtype, load_base_model, training_device
    from training.train import build_trainer

    torch.set_num_threads(1)
    data_file = tmp_path_factory.mktemp("packing") / "train.jsonl"
    data_file.write_text("".join(json.dumps(row) + "\n" for row in ROWS[:3]), encoding="utf-8")
    built = {}
    for family, model_dir in tiny_model_dirs.items():
        config = make_config(tmp_path_factory.mktemp(family), family, model_dir, data_file, "lora.dropout=0")
        tokenizer = load_tokenizer(config.model)
        template = load_template(repo_root / FAMILIES[family].template_file)
        data = prepare_data(config.data, tokenizer, template, seed=0)
        device = training_device()
        torch.manual_seed(0)
        model = add_lora(load_base_model(config.model, config.quantization, True, device), config.lora, 4)
        with torch.no_grad():  # LoRA B starts at zero: make the adapter matter, so its gradients are not trivial
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(std=0.05)
        batching = choose_batching(True, family, tokenizer.pad_token_id)
        dtype = compute_dtype(config.quantization.compute_dtype, device)
        trainer = build_trainer(config, model, tokenizer, data, device, dtype, [], batching)
        built[family] = (trainer, encoded_rows(tokenizer, template))
    return built


def step(trainer, batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    """One training step as the Trainer runs it: loss over the batch's label count, backward; LoRA grads."""
    model = trainer.model
    model.zero_grad(set_to_none=True)
    num_items = (batch["labels"] != IGNORE_INDEX).sum()  # what Trainer.get_batch_samples counts
    loss = trainer.training_step(model, dict(batch), num_items_in_batch=num_items)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.item(), grads


def reference_loss(trainer, rows: list[Encoded]) -> float:
    """The evaluator's token-weighted answer loss, each conversation alone."""
    trainer.model.eval()
    return answer_loss(trainer.model, rows, batch_size=1)["answer_loss"]


@pytest.mark.parametrize("family", ["llama2", "mistral"])
def test_packed_row_gives_the_padded_loss_and_lora_gradients(family, trainers):
    trainer, rows = trainers[family]
    padded_loss, padded_grads = step(trainer, PadCollator(0)(as_features(rows)))
    packed_loss, packed_grads = step(trainer, PackedCollator(0)(as_features(rows)))

    assert packed_loss == pytest.approx(padded_loss, rel=1e-5)
    assert packed_loss == pytest.approx(reference_loss(trainer, rows), rel=1e-5)  # the mean over answer tokens
    assert padded_grads.keys() == packed_grads.keys() and any("lora_A" in n for n in packed_grads)
    for name, grad in packed_grads.items():
        torch.testing.assert_close(grad, padded_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    assert max(g.abs().max().item() for g in packed_grads.values()) > 1e-4  # the gradients are not all zero


def test_falcon_packs_only_where_its_attention_keeps_conversations_apart(trainers):
    """transformers 5.6 builds Falcon's mask without the position ids, so packed conversations
    would see each other there and Falcon trains padded; later releases read the position ids and
    packing is exact. The choice must follow what the installed version really does."""
    from training.data.batches import positions_separate_conversations

    trainer, rows = trainers["falcon"]
    padded_loss, _ = step(trainer, PadCollator(0)(as_features(rows)))
    packed_loss, _ = step(trainer, PackedCollator(0)(as_features(rows)))
    assert padded_loss == pytest.approx(reference_loss(trainer, rows), rel=1e-5)
    exact = abs(packed_loss - padded_loss) <= 1e-5 * padded_loss
    if not exact:
        assert abs(packed_loss - padded_loss) > 1e-3 * padded_loss  # clearly wrong, not rounding
    assert positions_separate_conversations("falcon") == exact
    batching = choose_batching(True, "falcon", 0)
    assert batching.packed == exact
    if not exact:
        assert isinstance(batching.collator, PadCollator)
        assert "packing is off for falcon" in batching.note and "attend to each other" in batching.note
        assert trainer.args.train_sampling_strategy == "group_by_length"  # padded batches are grouped by length


def test_packed_row_has_no_padding_and_positions_restart_per_conversation(trainers):
    _, rows = trainers["llama2"]
    batch = PackedCollator(pad_token_id=0)(as_features(rows))
    lengths = [len(r.input_ids) for r in rows]
    assert batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in batch
    assert batch["position_ids"][0].tolist() == [p for n in lengths for p in range(n)]
    assert batch["input_ids"][0].tolist() == [t for r in rows for t in r.input_ids]
    trained = sum(r.trained_tokens for r in rows)
    assert (batch["labels"] != IGNORE_INDEX).sum().item() == trained
    padded = PadCollator(pad_token_id=0)(as_features(rows))
    assert (padded["labels"] != IGNORE_INDEX).sum().item() == trained  # the text row's first token is not counted


def test_packing_choice_follows_the_setting_and_the_family(trainers):
    assert trainers["llama2"][0].args.train_sampling_strategy == "random"
    for family in FAMILIES:
        off = choose_batching(False, family, 0)
        assert not off.packed and "training.packing=false" in off.note
    assert choose_batching(True, "mistral", 0).packed and choose_batching(True, "llama2", 0).packed
    for family in ("mistral", "llama2"):  # auto: packed on GPUs, length-grouped on the CPU
        assert choose_batching("auto", family, 0, "cuda").packed
        auto_cpu = choose_batching("auto", family, 0, "cpu")
        assert not auto_cpu.packed and "training.packing=auto" in auto_cpu.note
    from training.data.batches import positions_separate_conversations

    assert choose_batching("auto", "falcon", 0, "cuda").packed == positions_separate_conversations("falcon")


def test_packed_batch_without_answers_is_refused():
    rows = [{"input_ids": [1, 2], "labels": [-100, -100]}, {"input_ids": [3], "labels": [3]}]  # 3 starts a row
    with pytest.raises(ValueError, match="no answer token to learn"):
        PackedCollator(pad_token_id=0)(rows)


def test_length_grouped_order_pads_less_than_transformers_grouping_and_stays_random():
    import random

    from transformers.trainer_pt_utils import get_length_grouped_indices

    from training.data.batches import LengthGroupedOrder, padding_share

    train = Path(__file__).resolve().parents[1] / "training/datasets/instrucciones-es/train.jsonl"
    rows = [json.loads(line) for line in train.open(encoding="utf-8")]
    approximate = [len(r["instruction"] + r.get("input", "") + r["output"]) // 4 + 40 for r in rows]  # tokens
    lengths = random.Random(0).sample(approximate, 128)
    order = LengthGroupedOrder(lengths, 4, seed=3)
    epochs = [list(order), list(order)]  # two passes: two epochs
    assert all(sorted(e) == list(range(128)) for e in epochs) and epochs[0] != epochs[1]
    assert LengthGroupedOrder(lengths, 4, seed=3).order(0) == epochs[0]  # seeded
    assert max(lengths[i] for i in epochs[0][:4]) == max(lengths)  # the longest batch first
    ours = sum(padding_share(lengths, LengthGroupedOrder(lengths, 4, s).order(0), 4) for s in range(5)) / 5
    grouped = [get_length_grouped_indices(lengths, 4, generator=torch.Generator().manual_seed(s)) for s in range(5)]
    theirs = sum(padding_share(lengths, order, 4) for order in grouped) / 5
    assert ours < 0.06 and ours < theirs / 2, (ours, theirs)  # measured: 4.0 % vs 12.2 %


def test_the_trainer_orders_padded_batches_with_length_grouped_order(trainers):
    from training.data.batches import LengthGroupedOrder
    from training.trainer.build import LengthGroupedSFTTrainer

    trainer, _ = next(iter(trainers.values()))
    assert isinstance(trainer, LengthGroupedSFTTrainer)
    trainer.args.train_sampling_strategy = "group_by_length"
    try:
        assert isinstance(trainer._get_train_sampler(), LengthGroupedOrder)
    finally:
        trainer.args.train_sampling_strategy = "random"


@pytest.mark.parametrize("family", ["llama2", "falcon"])
def test_padding_to_a_width_multiple_keeps_the_loss_and_lora_gradients(family, trainers):
    trainer, rows = trainers[family]
    exact = PadCollator(0)(as_features(rows))
    wide = PadCollator(0, width_multiple=32)(as_features(rows))
    width = exact["input_ids"].shape[1]
    assert wide["input_ids"].shape == (len(rows), -(-width // 32) * 32) and wide["input_ids"].shape[1] > width
    extra = (slice(None), slice(width, None))
    assert (wide["input_ids"][extra] == 0).all() and (wide["attention_mask"][extra] == 0).all()
    assert (wide["labels"][extra] == IGNORE_INDEX).all()
    exact_loss, exact_grads = step(trainer, exact)
    wide_loss, wide_grads = step(trainer, wide)
    assert wide_loss == pytest.approx(exact_loss, rel=1e-5)
    for name, grad in wide_grads.items():
        torch.testing.assert_close(grad, exact_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_padded_widths_are_multiples_of_32_only_for_bf16_on_the_cpu():
    cpu_bf16 = choose_batching("auto", "llama2", 0, "cpu", torch.bfloat16)
    assert cpu_bf16.collator.width_multiple == 32 and "multiples of 32 tokens" in cpu_bf16.note
    assert cpu_bf16.row_width(481) == 512 and cpu_bf16.row_width(480) == 480
    cpu_fp32 = choose_batching("auto", "llama2", 0, "cpu", torch.float32)
    assert cpu_fp32.collator.width_multiple == 1 and cpu_fp32.row_width(481) == 481
    assert choose_batching(False, "llama2", 0, "cuda", torch.bfloat16).collator.width_multiple == 1
    packed = choose_batching(True, "llama2", 0, "cpu", torch.bfloat16)
    assert packed.packed and packed.row_width(481) == 481
