"""What the LM head and the loss of a training step hold, per device: the term that sets small models' peaks.

Our trainer is TRL's SFTTrainer (TRL 1.16), which adds a fused LM head (`add_fused_lm_head` in
trl/trainer/utils.py) and never builds the (tokens x vocabulary) logits: `ChunkedLogProbFunction`
(trl/kernels/chunked_logprob.py) multiplies the hidden states by `lm_head.weight` in tiles of at
most 4096 tokens x 32768 vocabulary columns (`TOKEN_CHUNK_SIZE`, `_CHUNKED_LOGPROB_CHUNK_SIZE`) into
one reused tile buffer in the compute dtype, keeping online log-sum-exp statistics; its backward
recomputes each tile and turns it into the logits' gradient. It scores `batch x (seq_len - 1)`
positions (the labels are shifted; the trained ones only, see below), and allocates:
- saved for backward: the hidden states as one contiguous copy (`hidden_states[:, :-1]` reshaped
  on the CPU, `hidden_states[mask]` on CUDA), and per position the log-normaliser and entropy;
- in backward: the tile buffer, a float32 gradient of the hidden states (and of the head, when
  it trains), and each vocabulary chunk of the weight cast to the compute dtype (a copy only when
  the head is stored in another dtype: a 16-bit head under float32 compute on the CPU);
- with Triton (CUDA) nothing more: a kernel folds each tile in place. Only labelled positions
  are scored: by TRL with Triton, and on the CPU too in our trainer (training/trainer/build.py), so the
  estimate takes the share of trained positions (`trained_share`, 1.0 = every position, an upper
  bound). Without Triton (the CPU)
  `_backward_tile` holds seven float32 tile-sized tensors at once (y, z, log_p, p, grad,
  is_target.float() and their difference) and the boolean target mask: 29 bytes per tile
  element besides the buffer (7.25 float32 tiles measured on SmolLM2); the forward's
  `_forward_tile` holds 13 bytes, so the backward sets the peak.
An NF4 head (`quantization.embeddings: 4bit`) is read through its dequantised 16-bit matrix
(training/model/embeddings.py), which the function saves for backward.

transformers' own loss (`loss="full"`: label smoothing or a custom loss function) instead
keeps float32 logits: at its backward the saved log-softmax, its incoming gradient and the
logits' gradient (3 x tokens x vocabulary x 4 bytes), plus the head weight cast to the
compute dtype (saved by the linear layer) when it is stored in another dtype.
"""

from __future__ import annotations

from training.families import FUSED_QKV
from training.memory.arch import Architecture

TOKEN_CHUNK, VOCAB_CHUNK = 4096, 32768  # trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE, the trainer's chunk_size
TORCH_TILE_BYTES = 7 * 4 + 1  # per tile element in _backward_tile without Triton, besides the buffer
LOSSES = ("fused", "full")


def final_norm_saved(arch: Architecture, tokens: int, b: int) -> int:
    """The final norm saves its input (RMSNorm upcasts it to fp32; LayerNorm keeps it) and fp32 statistics."""
    if arch.decoder == FUSED_QKV:
        return tokens * (arch.hidden * b + 8)
    return tokens * (arch.hidden * 4 + 4)


def head_and_loss_bytes(
    arch: Architecture, batch: int, seq_len: int, b: int, head: int, trains_head: bool, device: str, loss: str,
    trained_share: float = 1.0, hidden_bytes: int | None = None,
) -> tuple[int, int, str]:
    """(bytes saved from the loss's forward to its backward, bytes of its backward's peak, what that peak is).

    `b`: bytes per compute element; `head`: bytes per stored head weight (2, 4, or 0 for NF4,
    read through a dequantised 16-bit copy); `trained_share`: share of the positions whose next
    token carries loss (1.0, the upper bound, for plain text; answer-only rows have less);
    `hidden_bytes`: bytes per element of the final hidden states (the residual stream's dtype,
    fp32 in a 4/8-bit model; None: the compute dtype).
    """
    tokens = batch * seq_len
    cast = (head or 2) != b  # the head is multiplied in the compute dtype, through a cast copy
    if loss == "full":
        logits = 3 * 4 * tokens * arch.vocab
        weight = arch.vocab * arch.hidden * (b if cast else 2 if head == 0 else 0)
        note = "full fp32 logits: saved log-softmax + its gradient + the logits' gradient (3 x tokens x vocab x 4)"
        return tokens * 8, logits + weight, note
    scored = max(1, round(batch * (seq_len - 1) * trained_share))  # only labelled positions (training/trainer/build.py)
    rows, columns = min(scored, TOKEN_CHUNK), min(arch.vocab, VOCAB_CHUNK)
    saved = scored * (arch.hidden * (hidden_bytes or b) + 8) + (arch.vocab * arch.hidden * 2 if head == 0 else 0)
    per_element = b + (0 if device == "cuda" else TORCH_TILE_BYTES)
    backward = rows * columns * per_element + scored * arch.hidden * 4
    backward += columns * arch.hidden * b if cast else 0
    backward += arch.vocab * arch.hidden * 4 if trains_head else 0
    how = "folded in place (Triton)" if device == "cuda" else "+ 7 fp32 tiles and a mask in torch ops"
    note = (f"TRL's fused LM head backward: a {rows} x {columns} logits tile {how}, the hidden states' fp32 "
            f"gradient{', a weight chunk cast to the compute dtype' if cast else ''}")
    return saved, backward, note
