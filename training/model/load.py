"""The base model in 4-bit (or 8/16-bit), its tokenizer, and the LoRA adapter on top.

QLoRA as in the paper: NF4 weights with double quantisation, bfloat16 compute (float16 on
GPUs without bfloat16; on the CPU bfloat16 where it has native bfloat16 instructions, AMX or
AVX512-BF16, else float32), k-bit training preparation, gradient checkpointing where the
memory needs it (`gradient_checkpointing: auto`, training/model/checkpointing.py), and LoRA on
every linear layer of the decoder (per family, see
training/families.py). The unquantised frozen weights load in 16-bit; the k-bit preparation
upcasts the small ones (norms, biases) to float32 but keeps the embedding and LM head in 16-bit
(or NF4 with `quantization.embeddings: 4bit`; see training/model/embeddings.py). Each GPU process
loads the whole model on its own device, which is what DDP under `accelerate launch` expects;
under FSDP the model is loaded on the CPU and sharded by accelerate.
"""

from __future__ import annotations

import contextlib
import importlib
import os

import bitsandbytes as bnb
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

from training.config import LoraSettings, ModelSettings, QuantizationSettings
from training.families import FAMILIES, Family, family_of_model_type
from training.model.autocast import autocast_4bit_layers
from training.model.embeddings import compute_embeddings_in_float32, embedding_parameters, quantize_embeddings

# Non-reentrant checkpointing needs no input-grad hooks and works under DDP.
GRADIENT_CHECKPOINTING_KWARGS = {"use_reentrant": False}


def training_device() -> torch.device:
    """This process's GPU (LOCAL_RANK under accelerate/torchrun), or the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def fsdp_enabled() -> bool:
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")


CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bfloat16 matmuls


def cpuinfo_field(name: str, cpuinfo: str = "/proc/cpuinfo") -> str | None:
    """The first CPU's `name` field as Linux reports it in /proc/cpuinfo; None elsewhere or when absent."""
    try:
        text = open(cpuinfo, encoding="utf-8", errors="replace").read()
    except OSError:
        return None
    line = next((line for line in text.splitlines() if line.startswith(name)), None)
    return None if line is None else line.partition(":")[2].strip()


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere: nothing is assumed)."""
    return set((cpuinfo_field("flags", cpuinfo) or "").split())


def cpu_has_native_bf16(flags: set[str] | None = None) -> bool:
    """True when the CPU multiplies bfloat16 natively (AMX or AVX512-BF16): there bf16 matmuls ran
    2.2x (AVX512-BF16) to 6-7x (AMX) the float32 rate; elsewhere bf16 is emulated and slower."""
    return any(flag in (cpu_flags() if flags is None else flags) for flag in CPU_BF16_FLAGS)


def compute_dtype(setting: str, device: torch.device) -> torch.dtype:
    """The dtype of matmuls: `auto` is bfloat16 where the hardware runs it natively (CUDA with bf16,
    CPUs with AMX/AVX512-BF16), float16 on older GPUs, float32 on other CPUs."""
    if setting != "auto":
        return getattr(torch, setting)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


def load_tokenizer(model: ModelSettings):
    """The base model's tokenizer, with a pad token that is not EOS."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model.base_model, revision=model.revision, trust_remote_code=model.trust_remote_code
        )
    except OSError as err:  # what transformers raises for a missing folder, an unknown id or no network
        raise ValueError(
            f"base_model {model.base_model}: not a local model folder, and the hub did not provide it ({err}); "
            "check the id, log in with `huggingface-cli login` for gated models (Llama-2), or give a local folder"
        ) from err
    choose_pad_token(tokenizer)
    return tokenizer


def choose_pad_token(tokenizer) -> None:
    """Use a pad token distinct from EOS: the existing one, UNK, or an unused special token.

    Padding never carries a label here (the collator pads labels with -100), but a pad equal
    to EOS lets libraries that mask labels by pad id silently stop teaching the model to end
    its answers. No token is added: a new token would change the vocabulary of the base
    model the adapter is loaded on in the webui.
    """
    eos = tokenizer.eos_token_id
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != eos:
        return
    avoid = {eos, tokenizer.bos_token_id}
    added = sorted(getattr(tokenizer, "added_tokens_decoder", {}).items())
    candidates = [tokenizer.unk_token] + [token.content for i, token in added if token.special and i not in avoid]
    for token in candidates:
        if token is not None and tokenizer.convert_tokens_to_ids(token) not in avoid:
            tokenizer.pad_token = token
            return
    raise ValueError(
        f"{tokenizer.name_or_path}: the tokenizer has no pad, unk or spare special token distinct from EOS "
        f"({tokenizer.eos_token!r}) to pad with; add a pad token to the base model's tokenizer"
    )


def load_base_model(
    model: ModelSettings, quant: QuantizationSettings, gradient_checkpointing: bool, device: torch.device
):
    """The frozen base model, quantised as asked and ready for k-bit training."""
    check_family(model)
    dtype = compute_dtype(quant.compute_dtype, device)
    kwargs = {"revision": model.revision, "trust_remote_code": model.trust_remote_code}
    kwargs["dtype"] = dtype if quant.bits == 16 else frozen_weights_dtype(dtype)
    kwargs["device_map"] = None if fsdp_enabled() else {"": str(device)}
    if quant.bits < 16:
        kwargs["quantization_config"] = bitsandbytes_config(quant, dtype)
    with plain_linear_layers(FAMILIES[model.family]) if quant.bits < 16 else contextlib.nullcontext():
        base = AutoModelForCausalLM.from_pretrained(model.base_model, **kwargs)
    if quant.bits == 4 and device.type == "cpu":
        keep_cpu_4bit_weights_differentiable(base)
    if quant.bits == 4:
        autocast_4bit_layers(base)  # outputs in the autocast dtype, as nn.Linear's (training/model/autocast.py)
    # FSDP needs one dtype per flattened shard: the fp32 upcast of the k-bit preparation would break it.
    if quant.bits < 16 and not fsdp_enabled():
        if quant.embeddings == "4bit":
            quantize_embeddings(base, quant.quant_type)
        prepare_for_kbit_training(base, gradient_checkpointing)
    elif quant.embeddings == "4bit":
        raise ValueError("quantization.embeddings: 4bit needs a 4/8-bit model trained without FSDP; "
                         "set quantization.embeddings: 16bit")
    return base


def frozen_weights_dtype(compute: torch.dtype) -> torch.dtype:
    """Load dtype of a 4/8-bit model's unquantised weights: 16-bit, as frozen weights need no fp32 copy.

    The compute dtype where it is 16-bit (GPUs); bfloat16 under float32 compute (the CPU), the
    dtype of the checkpoints of the bundle's families.
    """
    return compute if compute in (torch.bfloat16, torch.float16) else torch.bfloat16


def prepare_for_kbit_training(model, gradient_checkpointing: bool) -> None:
    """PEFT's `prepare_model_for_kbit_training`, except that the embedding and LM head are not upcast.

    As PEFT's (0.18-0.21): every weight frozen, the unquantised 16-bit ones (norms, biases) upcast to
    float32, gradient checkpointing on, and input embeddings that require grad only for reentrant
    checkpointing. The embedding and LM head keep their storage and compute in float32 around it
    (training/model/embeddings.py), so the loss is the upcast model's.
    """
    kept = embedding_parameters(model)
    for param in model.parameters():
        param.requires_grad = False
        if param.dtype not in (torch.float16, torch.bfloat16):
            continue  # quantised, or already float32
        if id(param) not in kept:
            param.data = param.data.float()
        elif param.device.type == "cpu":
            # A 16-bit weight loaded on the CPU is a view of the checkpoint's memory map: it would keep
            # the whole file mapped, and resident once quantisation has read it (SmolLM2: +270 MB).
            param.data = param.data.clone()
    compute_embeddings_in_float32(model)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=dict(GRADIENT_CHECKPOINTING_KWARGS))
        if GRADIENT_CHECKPOINTING_KWARGS["use_reentrant"]:
            model.enable_input_require_grads()


def check_family(model: ModelSettings) -> None:
    """The recipe's family matches the model's config (read before any weight is loaded)."""
    config = AutoConfig.from_pretrained(
        model.base_model, revision=model.revision, trust_remote_code=model.trust_remote_code
    )
    found = family_of_model_type(config.model_type)
    if found != model.family:
        raise ValueError(
            f"{model.base_model}: model_type {config.model_type!r} is family {found!r}, but the recipe says "
            f"family: {model.family}; fix `family` or `base_model`"
        )


def keep_cpu_4bit_weights_differentiable(model) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for its fast CPU inference kernel.

    bitsandbytes 0.49 repacks a Linear4bit layer's weights the first time it runs on the CPU
    in eval mode without gradients (an evaluation pass), for good. Its kernel for packed
    weights has no backward: training after an evaluation then silently loses the gradient
    through every base layer (and the logits change). Measured here with bitsandbytes 0.49.2.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def bitsandbytes_config(quant: QuantizationSettings, dtype: torch.dtype):
    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant.quant_type,
        bnb_4bit_use_double_quant=quant.double_quant,
        bnb_4bit_compute_dtype=dtype,
        # FSDP shards the packed 4-bit weights together with the rest: same storage dtype.
        bnb_4bit_quant_storage=dtype if fsdp_enabled() else torch.uint8,
    )


@contextlib.contextmanager
def plain_linear_layers(family: Family):
    """Build the family's nn.Linear subclasses as nn.Linear while the model is constructed.

    transformers' bitsandbytes integration replaces only modules whose type is exactly
    nn.Linear, so Falcon's FalconLinear layers would silently stay unquantised. FalconLinear
    computes the same `x @ W.T + b` as nn.Linear, so building nn.Linear instead is exact.
    """
    originals = []
    for spec in family.linear_subclasses:
        module_name, class_name = spec.split(":")
        module = importlib.import_module(module_name)
        originals.append((module, class_name, getattr(module, class_name)))
        setattr(module, class_name, nn.Linear)
    try:
        yield
    finally:
        for module, class_name, original in originals:
            setattr(module, class_name, original)


def add_lora(model, lora: LoraSettings, bits: int):
    """Wrap the model with a fresh LoRA adapter and check every target layer was adapted."""
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    check_adapted_layers(peft_model, lora.target_modules, bits)
    return peft_model


def check_adapted_layers(model, targets: tuple[str, ...], bits: int) -> None:
    """Every target name matched a layer, and with 4/8 bits every adapted layer is quantised."""
    adapted = {name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    missing = [t for t in targets if not any(name.rsplit(".", 1)[-1] == t for name in adapted)]
    if missing:
        raise ValueError(f"lora.target_modules: no layer named {missing} in this model; check the names")
    expected = {4: bnb.nn.Linear4bit, 8: bnb.nn.Linear8bitLt}.get(bits)
    if expected is None:
        return
    plain = [name for name, module in adapted.items() if not isinstance(module.get_base_layer(), expected)]
    if plain:
        raise RuntimeError(
            f"{len(plain)} adapted layer(s) were not quantised to {bits}-bit (e.g. {plain[0]}: "
            f"{type(adapted[plain[0]].get_base_layer()).__name__}); add its class to the family's "
            "linear_subclasses in training/families.py"
        )


def use_fp32_adapter_weights(model) -> None:
    """Keep trainable (LoRA) weights in float32; autocast still runs their matmuls in bf16/fp16.

    TRL casts the adapter of a quantised model to bfloat16; small AdamW updates then round
    away, and GPUs without bfloat16 cannot run it. Under FSDP one dtype per shard is needed,
    so TRL's choice is kept there.
    """
    if fsdp_enabled():
        return
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
