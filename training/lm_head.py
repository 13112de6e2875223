"""Score only the trained positions in TRL's fused LM head on every device, not only with Triton.

TRL's SFTTrainer (1.16+) patches the model with a fused LM head (`add_fused_lm_head`,
trl/trainer/utils.py) that multiplies the hidden states by the vocabulary matrix in tiles and
returns the log-probabilities of the labels. With Triton (CUDA) it scores only the positions
whose label is trained (`hidden_states[mask]`); elsewhere it scores every position and zeroes
the untrained ones afterwards, because on compiled backends such as Neuron a changing number
of rows would recompile the kernel every batch. On the CPU nothing is compiled, and scoring
prompt and padding positions is pure waste: with answer-only labels three quarters of the
positions of an instruction row are prompt (its 49k-column softmax on SmolLM2 costs more than
a decoder layer). The result is the same either way: the untrained positions' outputs are
zeros in both paths, and each trained position's log-probability is computed by the same
function on the same row (tests/test_lm_head.py checks loss and gradients).

TRL decides this with `_use_triton(device)` looked up in trl.trainer.utils; this module makes
that lookup true for the CPU as well. The kernels themselves look `_use_triton` up in their own
module (trl.kernels.chunked_logprob), so they keep running torch ops on the CPU. If a TRL
release moves that decision, `score_trained_positions_only()` returns False and the trainer
keeps TRL's behaviour (slower, same result).
"""

from __future__ import annotations

import functools


def score_trained_positions_only() -> bool:
    """Make TRL's fused LM head score only labelled positions on the CPU too; True when in effect."""
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:
        return False
    original = getattr(trl_utils, "_use_triton", None)
    if original is None or not hasattr(trl_utils, "add_fused_lm_head"):
        return False
    if getattr(original, "spanish_ft_compact", False):
        return True

    @functools.wraps(original)
    def compact_on_cpu(device) -> bool:
        return device.type == "cpu" or original(device)

    compact_on_cpu.spanish_ft_compact = True
    trl_utils._use_triton = compact_on_cpu
    return True
