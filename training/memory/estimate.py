"""Memory estimate for inference and training, from a model's config.json alone (no weights).

    python -m training memory training/memory/configs/mistral-7b.json --method qlora --batch 4 --seq-len 1024
    python -m training memory mistral-7b --method inference --bits 4 --json
    python -m training memory --anchors          # the 7B families next to published measurements

The estimate is the peak of one training step (or of a prefill for inference), as a sum of
named physical terms: weights, quantisation constants, LoRA weights, gradients, optimizer
states, the activations autograd saves (per decoder layer, term by term in
`training.memory.activations`), the largest short-lived buffer set at that peak (the LM head
and loss at their backward, `training.memory.loss`, or one recomputed layer), the KV cache,
and the CUDA context.

Assumptions (each one is a choice a run can change; the numbers move with it):
- Compute dtype (`--compute-dtype`, as the recipe key): `auto` is bf16 under autocast on a GPU
  and fp32 on the CPU (`--device cpu`: no CUDA context; what a CPU run holds on top of the idle
  torch process, which the bench subtracts). The trainer's `auto` is bf16 on CPUs with AMX or
  AVX512-BF16 too (training/model/load.py: compute_dtype): pass `--compute-dtype bfloat16` there.
- 4/8-bit models (training/model/load.py): the embedding and LM head stay 16-bit (or NF4 with
  `--embeddings 4bit`), the other unquantised weights (norms, biases) are upcast to fp32 by the
  k-bit preparation, and the residual stream is fp32 (what gradient checkpointing keeps per
  layer). 16-bit models hold every weight, and the residual stream, in the compute dtype.
- LoRA/QLoRA: LoRA weights in fp32 (PEFT's `autocast_adapter_dtype=True`, and our trainer keeps
  them so); their gradients and AdamW states are fp32. Full fine-tuning keeps weights, gradients
  and torch AdamW states in the weights' dtype. Gradients and optimizer states are counted
  at every peak (they live through a step with gradient accumulation, and from the first step).
- 4-bit is bitsandbytes NF4: 0.5 byte per weight of every decoder linear layer, absmax per
  64-weight block (fp32, or 8-bit + an fp32 per 256 blocks with double quantisation).
  8-bit is LLM.int8: 1 byte per weight + an fp32 scale per output row.
- Attention is PyTorch SDPA; a training batch of more than one row has padding, so SDPA gets
  a mask (GQA heads are repeated and the mask is kept as a float bias per layer); so does a
  sliding-window layer (Gemma 3, Mistral) from rows as long as its window on.
- Inference: the KV cache holds the whole prompt in every layer at the end of the prefill, the
  sliding-window layers' too (transformers' DynamicSlidingWindowLayer keeps a view of the whole
  prompt's K/V until the first generated token), which is when the estimate is taken.
- The loss is TRL's fused LM head (`--loss fused`, our trainer's): no full logits, but on the
  CPU its torch fallback holds about 8 float32 tiles of up to 4096 tokens x 32768 vocabulary
  columns, which for small models with large vocabularies sets the peak. `--loss full` is
  transformers' cross-entropy on full fp32 logits.

Checking a CPU estimate against peak RSS: glibc keeps freed heap memory (loading alone leaves
~0.7 GB for SmolLM2) and a checkpoint read in place stays memory-mapped (its whole size in RSS).
bench/memory.py runs with MALLOC_MMAP_THRESHOLD_=65536 and prints measured and estimated peaks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from training.files import GIB
from training.memory.activations import layer_backward_bytes, layer_saved_bytes, prefill_bytes
from training.memory.arch import architecture_of
from training.memory.loss import LOSSES, final_norm_saved, head_and_loss_bytes
from training.memory.weights import optimizer_bytes, trainable_tensors, weight_bytes, weights_note

METHODS = ("inference", "full", "lora", "qlora")
OPTIMIZERS = ("adamw", "paged_adamw_8bit")
DEVICES = ("cuda", "cpu")
COMPUTE_DTYPES = {"auto": 0, "bfloat16": 2, "float16": 2, "float32": 4}  # bytes; auto: by device
EMBEDDINGS = ("16bit", "4bit")
# What torch.cuda.max_memory_allocated does not see: the CUDA context, cuBLAS/cuDNN workspaces
# and kernels, 0.5-1 GiB depending on GPU and driver (nvidia-smi shows it). We count the middle.
CUDA_CONTEXT_BYTES = int(0.75 * GIB)


@dataclass
class Estimate:
    """One estimate: `breakdown` (bytes per named part) sums to `total_bytes`."""

    model: str
    params: int
    trainable_params: int
    settings: dict
    breakdown: dict[str, int]
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(self.breakdown.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes, "total_gib": round(self.total_bytes / GIB, 3)}


@dataclass(frozen=True)
class MemorySettings:
    """What one estimate is for. Invalid values raise ValueError listing every bad field at once."""

    method: str = "qlora"  # inference | full (fine-tuning) | lora (16-bit base) | qlora (4/8-bit base)
    bits: int = 4  # base weights: 4 (NF4), 8 (LLM.int8) or 16
    seq_len: int = 1024  # tokens per row (the recipes' max_tokens)
    batch: int = 4  # rows per step (or prompts at once for inference)
    rank: int = 16  # LoRA rank, every linear layer a target
    gradient_checkpointing: bool = True  # keep one hidden state per layer and recompute the rest
    optimizer: str = "adamw"  # adamw | paged_adamw_8bit
    device: str = "cuda"  # cuda (adds the CUDA context) | cpu
    lora_dropout: float = 0.05  # > 0 saves a dropout mask per adapted input
    double_quant: bool = True  # NF4 absmax quantised to 8 bits (quantization.double_quant)
    compute: str = "auto"  # compute dtype: auto (bf16 on cuda, fp32 on cpu) | bfloat16 | float16 | float32
    embeddings: str = "16bit"  # embedding and LM head storage in a 4-bit model: 16bit | 4bit
    loss: str = "fused"  # fused: TRL's chunked LM head (our trainer) | full: fp32 logits (transformers)
    trained_share: float = 1.0  # share of the positions that carry loss (answer-only rows: ~0.3-0.5)

    def __post_init__(self) -> None:
        _check_settings(self)


def estimate(config: dict, settings: MemorySettings) -> Estimate:
    """Peak memory of one step of `settings.method` at batch x seq_len tokens; see the module docstring."""
    s = settings
    arch = architecture_of(config)
    compute_bytes = COMPUTE_DTYPES[s.compute] or (2 if s.device == "cuda" else 4)
    parts, notes = {}, {}
    parts["weights"], constants = weight_bytes(arch, s.method, s.bits, compute_bytes, s.double_quant, s.embeddings)
    notes["weights"] = weights_note(s.method, s.bits, compute_bytes, s.embeddings)
    if s.bits < 16:
        parts["quant_constants"] = constants
        notes["quant_constants"] = ("int8: an fp32 scale per output row" if s.bits == 8 else
                                    "NF4 absmax: uint8 per 64 weights + fp32 per 256 blocks" if s.double_quant else
                                    "NF4 absmax: fp32 per 64 weights")
        if s.embeddings == "4bit":
            notes["quant_constants"] += "; NF4 embeddings: fp32 per 64 weights"
    trainable = trainable_tensors(arch, s.method, s.rank)
    if s.method == "inference":
        parts["kv_cache"] = 2 * arch.layers * s.batch * s.seq_len * arch.kv_heads * arch.head_dim * compute_bytes
        notes["kv_cache"] = f"K and V of {arch.layers} layers x {arch.kv_heads} KV heads x batch x seq"
        parts["prefill"] = prefill_bytes(arch, s.batch, s.seq_len, compute_bytes, s.bits)
        notes["prefill"] = "working set of one layer on the whole prompt + last-token logits (fp32)"
    else:
        _add_training_parts(parts, notes, arch, trainable, s.method, s.optimizer, compute_bytes)
        parts["activations"], parts["peak_transient"], notes["peak_transient"] = _training_activations(
            arch, s, compute_bytes)
        notes["activations"] = ("one checkpointed hidden state per layer" if s.gradient_checkpointing
                                else "everything autograd saves in every layer")
    if s.device == "cuda":
        parts["cuda_context"] = CUDA_CONTEXT_BYTES
        notes["cuda_context"] = "CUDA context + library workspaces (0.5-1 GiB; not in torch's allocator stats)"
    shown = {**asdict(s), "compute": "bf16/fp16" if compute_bytes == 2 else "fp32"}
    return Estimate(model=arch.name, params=arch.total_params, trainable_params=sum(trainable),
                    settings=shown, breakdown=parts, notes=notes)


def _add_training_parts(parts, notes, arch, trainable, method, optimizer, compute_bytes) -> None:
    """LoRA weights, gradients and optimizer states; LoRA trains fp32 weights, full the model's dtype."""
    param_bytes = 4 if method in ("lora", "qlora") else compute_bytes
    if method in ("lora", "qlora"):
        parts["lora_weights"] = sum(trainable) * 4
        notes["lora_weights"] = f"rank x (in + out) per linear, all {len(arch.linears)} linears of every layer"
    parts["gradients"] = sum(trainable) * param_bytes
    notes["gradients"] = f"one per trainable weight, {'fp32' if param_bytes == 4 else 'bf16'}"
    parts["optimizer_states"] = optimizer_bytes(trainable, param_bytes, optimizer)
    notes["optimizer_states"] = ("AdamW exp_avg + exp_avg_sq in the weights' dtype" if optimizer == "adamw" else
                                 "8-bit AdamW: 2 bytes per weight + fp32 absmax per 256")


def _check_settings(s: MemorySettings) -> None:
    errors = []
    for name, value, allowed in (("compute", s.compute, COMPUTE_DTYPES), ("embeddings", s.embeddings, EMBEDDINGS),
                                 ("loss", s.loss, LOSSES)):
        if value not in allowed:
            errors.append(f"{name} {value!r}: allowed {', '.join(allowed)}")
    if s.embeddings == "4bit" and s.bits != 4:
        errors.append("embeddings 4bit needs --bits 4 (as quantization.embeddings: 4bit needs quantization.bits: 4)")
    if s.method not in METHODS:
        errors.append(f"method {s.method!r}: allowed {', '.join(METHODS)}")
    if s.bits not in (4, 8, 16):
        errors.append(f"bits {s.bits!r}: allowed 4, 8, 16")
    elif s.method in ("full", "lora") and s.bits != 16:
        errors.append(f"method {s.method} trains a 16-bit model; for a 4/8-bit base use --method qlora")
    elif s.method == "qlora" and s.bits == 16:
        errors.append("method qlora needs --bits 4 or 8; for a 16-bit base use --method lora")
    if s.optimizer not in OPTIMIZERS:
        errors.append(f"optimizer {s.optimizer!r}: allowed {', '.join(OPTIMIZERS)}")
    if s.device not in DEVICES:
        errors.append(f"device {s.device!r}: allowed {', '.join(DEVICES)}")
    errors += [f"{name} must be a positive integer, got {value!r}"
               for name, value in (("seq_len", s.seq_len), ("batch", s.batch), ("rank", s.rank)) if value < 1]
    if not 0 < s.trained_share <= 1:
        errors.append(f"trained_share: {s.trained_share} is not in (0, 1]: the share of positions that carry loss")
    if errors:
        raise ValueError("; ".join(errors))


def _training_activations(arch, s: MemorySettings, compute_bytes: int):
    """(saved activations, the largest transient at the peak, what that transient is)."""
    tokens = s.batch * s.seq_len
    head_bytes = compute_bytes if s.bits == 16 else 2 if s.embeddings == "16bit" else 0
    # the residual stream (what checkpointing keeps per layer): fp32 in a 4/8-bit model, whose embedding
    # output is cast up (training/model/embeddings.py) and whose fp32 norms keep it there; else the compute dtype
    residual_bytes = 4 if s.bits < 16 else compute_bytes
    # sliding-window and full-attention layers save different attention terms
    kinds = {sliding: sum(layer_saved_bytes(arch, s.method, s.batch, s.seq_len, s.rank, s.lora_dropout,
                                            compute_bytes, s.device, sliding).values())
             for sliding in arch.layer_kinds}
    loss_saved, loss_peak, loss_note = head_and_loss_bytes(
        arch, s.batch, s.seq_len, compute_bytes, head_bytes, s.method == "full", s.device, s.loss, s.trained_share,
        residual_bytes)
    outside = final_norm_saved(arch, tokens, compute_bytes) + loss_saved
    every_layer = sum(count * kinds[sliding] for sliding, count in arch.layer_kinds.items())
    saved = (arch.layers * tokens * arch.hidden * residual_bytes if s.gradient_checkpointing else every_layer) + outside
    backward = (layer_backward_bytes(arch, s.batch, s.seq_len, compute_bytes, s.bits)
                + (max(kinds.values()) if s.gradient_checkpointing else 0))
    if loss_peak >= backward:
        return saved, loss_peak, loss_note
    return saved, backward, "one layer's backward working set (recomputed activations + gradients in flight)"
