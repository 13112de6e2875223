"""Base model loading: real NF4 on every family (Falcon included), LoRA on the family's layers."""

from __future__ import annotations

from dataclasses import replace

import bitsandbytes as bnb
import pytest
import torch
import transformers.models.falcon.modeling_falcon as modeling_falcon
from torch import nn

from training.adapters.folder import read_adapter_config
from training.config import LoraSettings, ModelSettings, QuantizationSettings
from training.families import FAMILIES
from training.model.load import add_lora, check_adapted_layers, compute_dtype, load_base_model, load_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NF4 = QuantizationSettings(bits=4, quant_type="nf4", double_quant=True, compute_dtype="auto")
CPU = torch.device("cpu")


def settings(family: str, path) -> tuple[ModelSettings, LoraSettings]:
    model = ModelSettings(base_model=str(path), revision=None, family=family, trust_remote_code=False)
    return model, LoraSettings(rank=4, alpha=8, dropout=0.0, target_modules=FAMILIES[family].lora_targets)


@pytest.mark.parametrize("family", ["llama2", "mistral", "falcon"])
def test_every_target_layer_is_nf4_and_only_lora_trains(family, tiny_model_dirs):
    model_settings, lora = settings(family, tiny_model_dirs[family])
    model = add_lora(load_base_model(model_settings, NF4, True, CPU), lora, bits=4)
    targets = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in lora.target_modules]
    assert targets and all(isinstance(m.get_base_layer(), bnb.nn.Linear4bit) for m in targets)
    assert all(m.get_base_layer().weight.quant_state.quant_type == "nf4" for m in targets)
    unquantised = [
        n for n, m in model.named_modules() if type(m) is nn.Linear and "lora_" not in n and "lm_head" not in n
    ]
    assert unquantised == []
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert modeling_falcon.FalconLinear is not nn.Linear  # the swap is undone after loading


def test_the_check_catches_falcon_layers_left_unquantised(tiny_model_dirs):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    # transformers alone skips FalconLinear (it only replaces exact nn.Linear modules)
    base = AutoModelForCausalLM.from_pretrained(
        tiny_model_dirs["falcon"], quantization_config=BitsAndBytesConfig(load_in_4bit=True), device_map={"": "cpu"}
    )
    targets = FAMILIES["falcon"].lora_targets
    model = get_peft_model(base, LoraConfig(r=2, target_modules=list(targets)))
    with pytest.raises(RuntimeError, match="not quantised to 4-bit"):
        check_adapted_layers(model, targets, bits=4)


@pytest.mark.parametrize("bits, layer", [(8, bnb.nn.Linear8bitLt), (16, nn.Linear)])
def test_8_and_16_bit_lora_are_options(bits, layer, tiny_model_dirs):
    model_settings, lora = settings("mistral", tiny_model_dirs["mistral"])
    model = add_lora(load_base_model(model_settings, replace(NF4, bits=bits), False, CPU), lora, bits=bits)
    base_layer = model.base_model.model.model.layers[0].self_attn.q_proj.get_base_layer()
    assert type(base_layer) is layer


def test_wrong_family_or_target_is_named(tiny_model_dirs):
    model_settings, lora = settings("llama2", tiny_model_dirs["falcon"])
    with pytest.raises(ValueError, match="model_type 'falcon' is family 'falcon', but the recipe says family: llama2"):
        load_base_model(model_settings, NF4, False, CPU)
    model_settings, lora = settings("falcon", tiny_model_dirs["falcon"])
    with pytest.raises(ValueError, match=r"no layer named \['q_proj'\]"):
        add_lora(load_base_model(model_settings, NF4, False, CPU), replace(lora, target_modules=("dense", "q_proj")), 4)


def test_compute_dtype_on_cpu_is_bf16_only_where_the_cpu_has_native_bf16(monkeypatch, tmp_path):
    from training.model import load

    assert load.cpu_has_native_bf16({"avx2", "avx512_bf16"}) and load.cpu_has_native_bf16({"amx_bf16"})
    assert not load.cpu_has_native_bf16({"avx2", "avx512f"}) and not load.cpu_has_native_bf16(set())
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n", encoding="utf-8")
    assert load.cpu_flags(str(cpuinfo)) >= {"avx512f", "avx512_bf16"}
    assert load.cpu_flags(str(tmp_path / "absent")) == set()  # not Linux: nothing assumed
    monkeypatch.setattr(load, "cpu_flags", lambda: {"avx2"})
    assert compute_dtype("auto", CPU) == torch.float32
    monkeypatch.setattr(load, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    assert compute_dtype("auto", CPU) == torch.bfloat16
    assert compute_dtype("float32", CPU) == torch.float32 and compute_dtype("bfloat16", CPU) == torch.bfloat16


def test_an_evaluation_pass_on_cpu_does_not_break_later_gradients(tiny_model_dirs):
    model_settings, lora = settings("llama2", tiny_model_dirs["llama2"])
    model = add_lora(load_base_model(model_settings, NF4, False, CPU), lora, bits=4)
    ids = torch.tensor([[1, 5, 17, 42, 99, 7, 3]])
    first_lora = model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight
    # lora_B starts at zero, so give the adapter a value for gradients to flow through the base layers
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)

    def gradient():
        model.train()
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        return first_lora.grad.clone()

    before = gradient()
    model.eval()
    with torch.no_grad():
        model(input_ids=ids)  # what the trainer's evaluation does
    torch.testing.assert_close(gradient(), before)


def test_a_missing_base_model_says_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = ModelSettings(
        base_model=str(tmp_path / "no-model"), revision=None, family="mistral", trust_remote_code=False
    )
    with pytest.raises(ValueError, match="not a local model folder, and the hub did not provide it"):
        load_tokenizer(missing)


def test_shared_lora_dropout_draws_once_per_input_and_leaves_the_adapter_as_peft_makes_it(tiny_model_dirs, tmp_path):
    from peft import get_peft_model_state_dict

    from training.model.dropout import SharedDropout, share_lora_dropout

    model_settings, lora = settings("llama2", tiny_model_dirs["llama2"])
    torch.manual_seed(0)
    plain = add_lora(load_base_model(model_settings, replace(NF4, compute_dtype="float32"), False, CPU),
                     replace(lora, dropout=0.5), 4)
    torch.manual_seed(0)
    shared = add_lora(load_base_model(model_settings, replace(NF4, compute_dtype="float32"), False, CPU),
                      replace(lora, dropout=0.5), 4)
    assert share_lora_dropout(shared) > 0
    attention = shared.base_model.model.model.layers[0].self_attn
    q, k, o = (getattr(attention, name).lora_dropout["default"] for name in ("q_proj", "k_proj", "o_proj"))
    assert all(isinstance(d, SharedDropout) and d.p == 0.5 for d in (q, k, o))
    x = torch.randn(2, 5, 64)
    q.train(), k.train(), o.train()
    dropped = q(x)
    assert k(x) is dropped  # the same input: one draw for q, k and v
    zeros = (dropped == 0).float().mean().item()
    assert 0.3 < zeros < 0.7 and torch.allclose(dropped[dropped != 0], (x * 2)[dropped != 0])  # Dropout(0.5) of x
    assert o(x.clone()) is not dropped  # another tensor: its own draw
    # eval mode (inference, the webui): identical to PEFT's
    ids = torch.tensor([[1, 5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        torch.testing.assert_close(shared.eval()(input_ids=ids).logits, plain.eval()(input_ids=ids).logits)
    # the saved adapter: the same tensors and config as PEFT makes them
    assert get_peft_model_state_dict(shared).keys() == get_peft_model_state_dict(plain).keys()
    shared.save_pretrained(tmp_path / "a")
    assert read_adapter_config(tmp_path / "a")["lora_dropout"] == 0.5
    # outside autocast a bf16 input still reaches the fp32 adapter through PEFT's cast
    layer = attention.q_proj
    with torch.no_grad():
        assert layer(x.bfloat16().float()).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        shared.train()
        loss = shared(input_ids=ids, labels=ids).loss
    loss.backward()
    assert all(p.grad is not None for n, p in shared.named_parameters() if p.requires_grad and "lora_A" in n)


def test_shared_dropout_under_autocast_casts_a_float32_draw_once_to_bf16(tiny_model_dirs):
    from training.model.dropout import share_lora_dropout

    model_settings, lora = settings("llama2", tiny_model_dirs["llama2"])
    model = add_lora(load_base_model(model_settings, replace(NF4, compute_dtype="float32"), False, CPU),
                     replace(lora, dropout=0.5), 4)
    share_lora_dropout(model)
    attention = model.base_model.model.model.layers[0].self_attn
    q, k = (getattr(attention, name).lora_dropout["default"] for name in ("q_proj", "k_proj"))
    q.train(), k.train()
    x = torch.randn(2, 5, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        dropped = q(x)
        assert k(x) is dropped and dropped.dtype == torch.bfloat16
    kept = dropped != 0
    # the values lora_A's matmul would have cast: Dropout(0.5) of x, then bf16
    assert torch.equal(dropped[kept], (x * 2).bfloat16()[kept])
    assert q(x).dtype == torch.float32  # no autocast, no cast


def test_4bit_layers_under_autocast_return_the_autocast_dtype_with_the_same_product(tiny_model_dirs):
    from training.model.autocast import autocast_4bit_layers

    model_settings, lora = settings("llama2", tiny_model_dirs["llama2"])
    bf16 = replace(NF4, compute_dtype="bfloat16")

    def loaded(hooked: bool):
        torch.manual_seed(0)
        model = add_lora(load_base_model(model_settings, bf16, False, CPU), replace(lora, dropout=0.0), 4)
        if not hooked:  # what bitsandbytes does on its own
            for module in model.modules():
                if isinstance(module, bnb.nn.Linear4bit):
                    module._forward_pre_hooks.clear()
        return model

    hooked, plain = loaded(True), loaded(False)
    assert autocast_4bit_layers(hooked) == 0  # already on every 4-bit layer, once
    base = hooked.base_model.model.model.layers[0].mlp.gate_proj.get_base_layer()
    plain_base = plain.base_model.model.model.layers[0].mlp.gate_proj.get_base_layer()
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, plain_out = base(x), plain_base(x)
        assert out.dtype == torch.bfloat16 and plain_out.dtype == torch.float32
        assert torch.equal(out, plain_out.bfloat16())  # the same cast and product; only the output dtype differs
        assert torch.equal(base(x), plain_base(x))  # outside autocast: untouched
    ids = torch.tensor([[1, 5, 17, 42, 99, 7, 3, 11, 23]])
    results = []
    for model in (hooked, plain):
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads = torch.cat([p.grad.flatten() for n, p in sorted(model.named_parameters()) if p.requires_grad])
        results.append((loss.detach(), grads))
    (loss, grads), (plain_loss, plain_grads) = results
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, plain_loss, rtol=1e-2, atol=0)  # bf16 rounding after the products only
    assert torch.nn.functional.cosine_similarity(grads, plain_grads, dim=0) > 0.99
