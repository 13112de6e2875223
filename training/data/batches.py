"""Padding-free batches: the conversations of a batch packed into one row, exactly.

With `training.packing: true` (the default on GPUs, `auto`) the rows of a batch are concatenated into one
row without a single pad token. Position ids restart at 0 for each conversation, and the
attention never crosses a conversation boundary, so the loss and the LoRA gradients equal
those of the padded batch (tests/test_packing.py checks both to float tolerance on NF4
Llama and Mistral models, and that Falcon would not be exact):
- transformers derives a block-diagonal causal mask from restarting position ids when no
  attention mask is given and no KV cache is built (TRL's trainer passes `use_cache=False`),
  for SDPA and eager attention; flash-attention (GPU only, not tested here) runs its
  variable-length kernel on the sequence boundaries the collator adds (`cu_seq_lens_*`).
- our labels go through unchanged (answers only); the label of each conversation's first
  token is -100, because nothing before it in the row belongs to it. The loss stays the mean
  over the answer tokens of the batch.
A family whose attention ignores position ids when it builds its mask (Falcon in
transformers 5.6; later releases build it from the position ids) would let packed
conversations attend to each other; it trains padded and length-grouped instead, and says so.
Whether the installed transformers keeps packed Falcon conversations apart is measured once per
process on a tiny random model (`positions_separate_conversations`). `training.packing: false`
pads for any family.

Cost: with SDPA or eager attention the block-diagonal mask is dense, so every token of a
packed row pays attention over the whole row (the batch's tokens), where a length-grouped
padded row pays only its own length. That matters when attention is a large share of the
work (small models, long packed rows, CPUs): bench/train_throughput.py measures both. On
this project's 2-core CPU a length-grouped padded batch trained ~11 % more tokens per second
than the same rows packed (17M-parameter Llama), so `training.packing: auto`, the default,
packs on GPUs only; `true` packs everywhere, `false` nowhere.

Padded batches are grouped by length (LengthGroupedOrder): each epoch the rows are shuffled,
cut into wide groups (GROUP_BATCHES batches each), sorted by length within a group and cut into
batches, and the batches of the whole epoch are shuffled. transformers' own length grouping sorts
within groups of at most 50 batches and a quarter of the dataset, which left 9.9 % of the tokens of
a 128-row epoch of instrucciones-es as padding at batch 4; wider groups leave less (the bench,
bench/train_throughput.py, prints the padding share of every arm). Rows still meet different
partners from epoch to epoch, and the batch holding the longest row comes first, so a run that
cannot fit its longest batch fails at once rather than hours in.

Padded widths are rounded up to a multiple of 32 tokens where the CPU computes in bfloat16
(padded_width_multiple). There PyTorch runs bf16 matmuls through oneDNN, which builds and caches
a kernel for every new matrix shape: with exact widths each batch brought new shapes, the
building cost time, and the cache grew by 13 MB a step (about 430 MB over a 32-step epoch of
the bench's 17M Llama, which is most of its peak memory growth). With widths in steps of 32 the
shapes repeat: the same epoch trained 1.09x faster with 270 MB less peak RSS, although 11.5 %
of the computed tokens were padding instead of 3 % (bench/train_throughput.py; steps of 16 kept
90 MB more, steps of 64 were 5 % slower). Float32 on the CPU (MKL, no per-shape cache) keeps exact widths, as
do GPUs, where this was not measured.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from transformers import AutoConfig, AutoModelForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from training.data.tokens import PadCollator, padded_width, require_answer_tokens
from training.families import FAMILIES

GROUP_BATCHES = 64  # batches per length-sorted group: 256 rows at batch 4
CPU_BF16_WIDTH_MULTIPLE = 32  # padded widths on a bf16 CPU (see the module text)


def padded_width_multiple(device_type: str, dtype: torch.dtype) -> int:
    """Tokens a padded batch's width is a multiple of: 32 for bfloat16 on the CPU, else exact widths."""
    return CPU_BF16_WIDTH_MULTIPLE if device_type == "cpu" and dtype == torch.bfloat16 else 1


class LengthGroupedOrder(torch.utils.data.Sampler):
    """Row order for padded batches: wide length-sorted groups, cut into batches, batches shuffled.

    `batch_size` is the rows of one micro-batch (per device); consecutive slices of that size of the
    order are the batches. Seeded per epoch (`set_epoch`, else the number of passes so far).
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_batches: int = GROUP_BATCHES) -> None:
        self.lengths, self.batch_size, self.seed, self.group_batches = list(lengths), batch_size, seed, group_batches
        self.epoch, self._passes = None, 0

    def __len__(self) -> int:
        return len(self.lengths)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        epoch = self._passes if self.epoch is None else self.epoch
        self._passes += 1
        return iter(self.order(epoch))

    def order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        shuffled = torch.randperm(len(self.lengths), generator=generator).tolist()
        group = self.group_batches * self.batch_size
        batches = []
        for start in range(0, len(shuffled), group):
            rows = sorted(shuffled[start:start + group], key=lambda i: self.lengths[i], reverse=True)
            batches += [rows[i:i + self.batch_size] for i in range(0, len(rows), self.batch_size)]
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        longest = max(range(len(batches)), key=lambda b: max(self.lengths[i] for i in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
        return [i for batch in batches for i in batch]


def padding_share(lengths: list[int], order: list[int], batch_size: int) -> float:
    """The share of a padded epoch's tokens that are padding, for rows taken in `order`."""
    computed = sum(max(lengths[i] for i in order[s:s + batch_size]) * len(order[s:s + batch_size])
                   for s in range(0, len(order), batch_size))
    return 1 - sum(lengths) / computed if computed else 0.0


@dataclass(frozen=True)
class PackedCollator:
    """Concatenate a batch into one row: input_ids, labels, position_ids and sequence boundaries.

    TRL's padding-free collator does the flattening; position 0 of each conversation gets
    label -100 there, as in a padded row, whose first token predicts nothing either.
    """

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        flatten = DataCollatorForLanguageModeling(pad_token_id=self.pad_token_id, padding_free=True)
        batch = flatten([{"input_ids": row["input_ids"], "labels": row["labels"]} for row in rows])
        require_answer_tokens(batch["labels"])
        return batch


@functools.cache
def positions_separate_conversations(family: str) -> bool:
    """Whether the installed transformers keeps two conversations packed in one row apart for this
    family: a tiny random model of its architecture gives the second conversation the same logits
    packed (restarting position ids, no attention mask) as alone."""
    config = AutoConfig.for_model(FAMILIES[family].model_types[0], vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                  num_attention_heads=4, num_key_value_heads=1, intermediate_size=64,
                                  max_position_embeddings=64)
    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    first, second = torch.randint(0, 64, (7,), generator=generator), torch.randint(0, 64, (5,), generator=generator)
    positions = torch.cat([torch.arange(7), torch.arange(5)])
    with torch.no_grad():
        packed = model(input_ids=torch.cat([first, second])[None], position_ids=positions[None], use_cache=False).logits
        alone = model(input_ids=second[None], use_cache=False).logits
    return torch.allclose(packed[0, 7:], alone[0], atol=1e-4)


def packing_blocker(family: str) -> str | None:
    """Why packing would not be exact for this family, or None when it is."""
    if FAMILIES[family].packs_by_position_ids or positions_separate_conversations(family):
        return None
    return (
        f"{FAMILIES[family].architecture}'s attention in this transformers version builds its mask without the "
        "position ids, so packed conversations would attend to each other"
    )


@dataclass(frozen=True)
class Batching:
    """How the trainer builds batches: the collator, whether it packs, and the log line saying why."""

    collator: PackedCollator | PadCollator
    packed: bool
    note: str

    def row_width(self, longest_row: int) -> int:
        """The longest row as the model computes it: padded batches round it up to their width multiple."""
        return longest_row if self.packed else padded_width(longest_row, self.collator.width_multiple)


def choose_batching(packing: bool | str, family: str, pad_token_id: int, device_type: str = "cpu",
                    dtype: torch.dtype = torch.float32) -> Batching:
    """Packed where packing is exact and asked for; otherwise padded (the trainer then groups rows by length).

    `packing="auto"` (the default) packs on GPUs and pads length-grouped batches on the CPU,
    where SDPA's dense block mask makes a packed row cost more per token (see the module text).
    Padded widths follow `padded_width_multiple(device_type, dtype)`.
    """
    multiple = padded_width_multiple(device_type, dtype)
    pad = PadCollator(pad_token_id, multiple)
    padded = "batches: padded" + (f" to multiples of {multiple} tokens" if multiple > 1 else "") + ", grouped by length"
    if packing == "auto":
        if device_type == "cpu":
            note = (f"{padded} (training.packing=auto: on the CPU length-grouped batches "
                    "train faster than packed rows; training.packing=true packs)")
            return Batching(pad, False, note)
        packing = True
    if not packing:
        return Batching(pad, False, f"{padded} (training.packing=false)")
    blocker = packing_blocker(family)
    if blocker:
        note = f"{padded}; packing is off for {family}: {blocker}"
        return Batching(pad, False, note)
    note = "batches: packed, padding-free (positions restart and attention stays within each conversation)"
    return Batching(PackedCollator(pad_token_id), True, note)
