"""The frozen embedding and LM head of 4-bit models: 16-bit storage with the upcast model's loss, or NF4 (opt-in)."""

from __future__ import annotations

from dataclasses import replace

import bitsandbytes as bnb
import pytest
import torch
from peft import prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from training.config import ConfigError, LoraSettings, ModelSettings, QuantizationSettings, load_config
from training.families import FAMILIES
from training.model.load import add_lora, keep_cpu_4bit_weights_differentiable, load_base_model, plain_linear_layers

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NF4 = QuantizationSettings(bits=4, quant_type="nf4", double_quant=True, compute_dtype="float32")
NF4_EMBEDDINGS = replace(NF4, embeddings="4bit")
CPU = torch.device("cpu")
FAMILY_NAMES = ("llama2", "mistral", "falcon")


@pytest.fixture(scope="module")
def bf16_dirs(tiny_model_dirs, tmp_path_factory):
    """The tiny models saved in bfloat16, as real checkpoints are: a 16-bit load of them is exact."""
    dirs = {}
    for family in FAMILY_NAMES:
        dirs[family] = tmp_path_factory.mktemp(f"bf16-{family}")
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dirs[family], dtype=torch.bfloat16)
        model.save_pretrained(dirs[family])
    return dirs


def settings(family: str, path) -> tuple[ModelSettings, LoraSettings]:
    model = ModelSettings(base_model=str(path), revision=None, family=family, trust_remote_code=False)
    return model, LoraSettings(rank=4, alpha=8, dropout=0.0, target_modules=FAMILIES[family].lora_targets)


def with_lora(base, family: str):
    """LoRA on `base` with every B non-zero (seeded), so gradients reach every adapted layer."""
    model = add_lora(base, settings(family, "")[1], bits=4)
    generator = torch.Generator().manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_" in name:
            param.data = torch.randn(param.shape, generator=generator) * 0.05
    return model.train()


def batch(vocab: int) -> torch.Tensor:
    return torch.randint(3, vocab, (2, 24), generator=torch.Generator().manual_seed(1))


def loss_and_lora_grads(model, ids) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_embedding_and_head_stay_16bit_and_the_rest_is_fp32(family, bf16_dirs):
    base = load_base_model(settings(family, bf16_dirs[family])[0], NF4, True, CPU)
    embedding, head = base.get_input_embeddings().weight, base.get_output_embeddings().weight
    assert embedding.dtype == head.dtype == torch.bfloat16
    assert (head is embedding) == base.config.tie_word_embeddings
    rest = [p for p in base.parameters() if p is not embedding and p is not head and p.dtype != torch.uint8]
    assert rest and all(p.dtype == torch.float32 for p in rest)  # norms (and biases) as PEFT upcasts them
    assert not any(p.requires_grad for p in base.parameters()) and base.is_gradient_checkpointing


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_loss_and_lora_gradients_equal_those_of_peft_fp32_upcast(family, bf16_dirs):
    """What the model computed before: PEFT's preparation with the embedding and head in fp32."""
    model_settings, _ = settings(family, bf16_dirs[family])
    ours = with_lora(load_base_model(model_settings, NF4, True, CPU), family)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)
    with plain_linear_layers(FAMILIES[family]):
        reference = AutoModelForCausalLM.from_pretrained(bf16_dirs[family], dtype=torch.float32,
                                                         quantization_config=quant, device_map={"": "cpu"})
    keep_cpu_4bit_weights_differentiable(reference)
    reference = prepare_model_for_kbit_training(reference, True, {"use_reentrant": False})
    assert reference.get_input_embeddings().weight.dtype == torch.float32
    reference = with_lora(reference, family)
    ids = batch(ours.config.vocab_size)
    loss, grads = loss_and_lora_grads(ours, ids)
    reference_loss, reference_grads = loss_and_lora_grads(reference, ids)
    torch.testing.assert_close(loss, reference_loss, rtol=1e-6, atol=0)
    assert grads.keys() == reference_grads.keys() and all(g.abs().sum() > 0 for g in grads.values())
    # Equal with bitsandbytes 0.49; 0.50 rounds a few NF4 codes of a bf16 load differently from an fp32 one.
    for name, grad in grads.items():
        assert (grad - reference_grads[name]).norm() <= 1e-2 * reference_grads[name].norm(), name


@pytest.mark.parametrize("quant", [NF4, NF4_EMBEDDINGS], ids=["16bit", "4bit"])
def test_trl_fused_head_scores_the_same_log_probs_as_the_logits(quant, bf16_dirs):
    """TRL's chunked loss reads `lm_head.weight` itself: it must see the head the logits come from."""
    from trl.trainer.utils import add_fused_lm_head

    model = load_base_model(settings("falcon", bf16_dirs["falcon"])[0], quant, True, CPU)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # as TRL's SFTTrainer does
    model = with_lora(model, "falcon")
    ids = batch(model.config.vocab_size)
    logits = model(input_ids=ids).logits
    assert logits.dtype == torch.float32
    expected = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    fused = model(input_ids=ids, labels=ids, fused_lm_head=True)
    torch.testing.assert_close(fused.log_probs, expected, rtol=1e-4, atol=1e-4)
    model.zero_grad()
    fused.loss.backward()
    grads = [p.grad for name, p in model.named_parameters() if "lora_" in name]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_4bit_embeddings_keep_the_tie_exact_and_store_it_once(bf16_dirs):
    base = load_base_model(settings("falcon", bf16_dirs["falcon"])[0], NF4_EMBEDDINGS, True, CPU)
    assert base.config.tie_word_embeddings
    embedding, head = base.get_input_embeddings(), base.get_output_embeddings()
    assert isinstance(embedding, bnb.nn.Embedding4bit) and embedding.weight.dtype == torch.uint8
    vocab, width = base.config.vocab_size, base.config.hidden_size
    rows = embedding(torch.arange(vocab))
    assert torch.equal(rows, head.weight.float())  # token i's input vector is the head's row i
    packed = [p for p in base.parameters() if p.dtype == torch.uint8 and p.numel() == vocab * width // 2]
    assert len(packed) == 1  # the tied matrix is stored once


def test_4bit_embeddings_of_an_untied_model_quantise_both_and_logits_stay_close(bf16_dirs):
    model_settings, _ = settings("llama2", bf16_dirs["llama2"])
    sixteen = load_base_model(model_settings, NF4, False, CPU).eval()
    four = load_base_model(model_settings, NF4_EMBEDDINGS, False, CPU).eval()
    assert not four.config.tie_word_embeddings
    vocab = four.config.vocab_size
    head_rows = four.get_output_embeddings().weight.float()
    assert not torch.equal(four.get_input_embeddings()(torch.arange(vocab)), head_rows)  # two matrices
    ids = batch(vocab)
    with torch.no_grad():
        reference, logits = sixteen(input_ids=ids).logits, four(input_ids=ids).logits
    assert not torch.equal(logits, reference)  # NF4 rounding is real...
    # ...and small: NF4 rounds a Gaussian matrix with ~10 % relative error, and two matrices are rounded here
    assert (logits - reference).norm() < 0.2 * reference.norm()


def test_a_model_with_4bit_embeddings_saves_its_adapter(bf16_dirs, tmp_path):
    """PEFT reads the whole state dict to save an adapter; bitsandbytes' Embedding4bit alone refuses it."""
    model = with_lora(load_base_model(settings("llama2", bf16_dirs["llama2"])[0], NF4_EMBEDDINGS, True, CPU), "llama2")
    model.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_model.safetensors").is_file()


def test_the_recipe_key_defaults_to_16bit_and_4bit_needs_a_4bit_model(repo_root):
    recipe = repo_root / "training" / "recipes" / "mistral-instrucciones.yaml"
    assert load_config(recipe).quantization.embeddings == "16bit"
    assert load_config(recipe, ["quantization.embeddings=4bit"]).quantization.embeddings == "4bit"
    with pytest.raises(ConfigError) as err:
        load_config(recipe, ["quantization.embeddings=4bit", "quantization.bits=8"])
    assert "quantization.embeddings: 4bit needs quantization.bits: 4" in str(err.value)
    with pytest.raises(ConfigError, match="quantization.embeddings"):
        load_config(recipe, ["quantization.embeddings=8bit"])
