"""TRL's fused LM head scoring only the trained positions on the CPU gives the same loss and gradients."""

from __future__ import annotations

import pytest
import torch

from training.trainer.build import score_trained_positions_only

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def loss_and_grads(model, batch, compact: bool):
    from trl.trainer import utils as trl_utils

    patched = trl_utils._use_triton
    if not compact:
        trl_utils._use_triton = patched.__wrapped__
    try:
        model.zero_grad()
        out = model(**batch, fused_lm_head=True)
        out.loss.backward()
    finally:
        trl_utils._use_triton = patched
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_compact_scoring_equals_scoring_every_position(tiny_model_dirs):
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    assert score_trained_positions_only() and score_trained_positions_only()  # idempotent
    from trl.trainer import utils as trl_utils

    assert trl_utils._use_triton(torch.device("cpu"))
    from trl.kernels import chunked_logprob

    assert not chunked_logprob._use_triton(torch.device("cpu"))  # the kernels still run torch ops on the CPU

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs["llama2"], dtype=torch.float32)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    torch.manual_seed(0)
    ids = torch.randint(3, 300, (2, 24))
    labels = ids.clone()
    labels[:, :15] = -100  # the prompt
    labels[1, 20:] = -100  # padding
    batch = {"input_ids": ids, "labels": labels}
    compact, compact_grads = loss_and_grads(model, batch, compact=True)
    full, full_grads = loss_and_grads(model, batch, compact=False)

    torch.testing.assert_close(compact.loss, full.loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(compact.log_probs, full.log_probs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compact.entropy, full.entropy, rtol=1e-5, atol=1e-6)
    assert compact_grads.keys() == full_grads.keys() and compact_grads
    for name, grad in compact_grads.items():
        torch.testing.assert_close(grad, full_grads[name], rtol=1e-4, atol=1e-7, msg=name)
    assert (compact.log_probs[labels[:, 1:] == -100] == 0).all()  # untrained positions are zeros in both
