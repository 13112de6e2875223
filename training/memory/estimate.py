"""Memory estimate for inference and training, from a model's config.json alone (no weights).

    python -m training memory training/memory/configs/mistral-7b.json --method qlora --batch 4 --seq-len 1024
    python -m training memory mistral-7b --method inference --bits 4 --json
    python -m training memory --anchors          # the 7B families next to published measurements

The estimate is the peak of one training step (or of a prefill for inference), as a sum of
named physical terms: weights, quantisation constants, LoRA weights, gradients, optimizer
states, the activations autograd saves (per decoder layer, term by term in
`training.memory_activations`), the largest short-lived buffer set at that peak (the LM head
and loss at their backward, `training.memory_loss`, or one recomputed layer), the KV cache,
and the CUDA context.

Assumptions (each one is a choice a run can change; the numbers move with it):
- Compute dtype (`--compute-dtype`, as the recipe key): `auto` is bf16 under autocast on a GPU
  and fp32 on the CPU (`--device cpu`: no CUDA context; what a CPU run holds on top of the idle
  torch process, which the bench subtracts).
- 4/8-bit models (training/model/load.py): the embedding and LM head stay 16-bit (or NF4 with
  `--embeddings 4bit`), the other unquantised weights (norms, biases) are upcast to fp32 by the
  k-bit preparation. 16-bit models hold every weight in the compute dtype.
- LoRA/QLoRA: LoRA weights in fp32 (PEFT's `autocast_adapter_dtype=True`, and our trainer keeps
  them so); their gradients and AdamW states are fp32. Full fine-tuning keeps weights, gradients
  and torch AdamW states in the weights' dtype. Gradients and optimizer states are counted
  at every peak (they live through a step with gradient accumulation, and from the first step).
- 4-bit is bitsandbytes NF4: 0.5 byte per weight of every decoder linear layer, absmax per
  64-weight block (fp32, or 8-bit + an fp32 per 256 blocks with double quantisation).
  8-bit is LLM.int8: 1 byte per weight + an fp32 scale per output row.
- Attention is PyTorch SDPA; a training batch of more than one row has padding, so SDPA gets
  a mask (GQA heads are repeated and the mask is kept as a float bias per layer).
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

from training.memory.activations import layer_backward_bytes, layer_saved_bytes, prefill_bytes
from training.memory.arch import architecture_of
from training.memory.loss import LOSSES, final_norm_saved, head_and_loss_bytes
from training.memory.weights import optimizer_bytes, trainable_tensors, weight_bytes, weights_note

GIB = 1024**3
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


def estimate(
    config: dict, method: str, bits: int, seq_len: int, batch: int, rank: int,
    gradient_checkpointing: bool = True, optimizer: str = "adamw", device: str = "cuda",
    lora_dropout: float = 0.05, double_quant: bool = True, compute: str = "auto", embeddings: str = "16bit",
    loss: str = "fused", trained_share: float = 1.0,
) -> Estimate:
    """Peak memory of one step of `method` at `batch` x `seq_len` tokens; see the module docstring."""
    _check_settings(method, bits, seq_len, batch, rank, optimizer, device, compute, embeddings, loss)
    if not 0 < trained_share <= 1:
        raise ValueError(f"trained_share: {trained_share} is not in (0, 1]: the share of positions that carry loss")
    arch = architecture_of(config)
    compute_bytes = COMPUTE_DTYPES[compute] or (2 if device == "cuda" else 4)
    parts, notes = {}, {}
    parts["weights"], constants = weight_bytes(arch, method, bits, compute_bytes, double_quant, embeddings)
    notes["weights"] = weights_note(method, bits, compute_bytes, embeddings)
    if bits < 16:
        parts["quant_constants"] = constants
        notes["quant_constants"] = ("int8: an fp32 scale per output row" if bits == 8 else
                                    "NF4 absmax: uint8 per 64 weights + fp32 per 256 blocks" if double_quant else
                                    "NF4 absmax: fp32 per 64 weights")
        if embeddings == "4bit":
            notes["quant_constants"] += "; NF4 embeddings: fp32 per 64 weights"
    trainable = trainable_tensors(arch, method, rank)
    if method == "inference":
        parts["kv_cache"] = 2 * arch.layers * batch * seq_len * arch.kv_heads * arch.head_dim * compute_bytes
        notes["kv_cache"] = f"K and V of {arch.layers} layers x {arch.kv_heads} KV heads x batch x seq"
        parts["prefill"] = prefill_bytes(arch, batch, seq_len, compute_bytes, bits)
        notes["prefill"] = "working set of one layer on the whole prompt + last-token logits (fp32)"
    else:
        _add_training_parts(parts, notes, arch, trainable, method, optimizer, compute_bytes)
        head_bytes = compute_bytes if bits == 16 else 2 if embeddings == "16bit" else 0
        parts["activations"], parts["peak_transient"], notes["peak_transient"] = _training_activations(
            arch, method, batch, seq_len, rank, lora_dropout, gradient_checkpointing, compute_bytes, bits, device,
            head_bytes, loss, trained_share)
        notes["activations"] = ("one checkpointed hidden state per layer" if gradient_checkpointing
                                else "everything autograd saves in every layer")
    if device == "cuda":
        parts["cuda_context"] = CUDA_CONTEXT_BYTES
        notes["cuda_context"] = "CUDA context + library workspaces (0.5-1 GiB; not in torch's allocator stats)"
    settings = dict(method=method, bits=bits, seq_len=seq_len, batch=batch, rank=rank,
                    gradient_checkpointing=gradient_checkpointing, optimizer=optimizer, device=device,
                    lora_dropout=lora_dropout, double_quant=double_quant,
                    compute="bf16/fp16" if compute_bytes == 2 else "fp32", embeddings=embeddings, loss=loss,
                    trained_share=trained_share)
    return Estimate(model=arch.name, params=arch.total_params, trainable_params=sum(trainable),
                    settings=settings, breakdown=parts, notes=notes)


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


def _check_settings(method, bits, seq_len, batch, rank, optimizer, device, compute, embeddings, loss) -> None:
    errors = []
    for name, value, allowed in (("compute", compute, COMPUTE_DTYPES), ("embeddings", embeddings, EMBEDDINGS),
                                 ("loss", loss, LOSSES)):
        if value not in allowed:
            errors.append(f"{name} {value!r}: allowed {', '.join(allowed)}")
    if embeddings == "4bit" and bits != 4:
        errors.append("embeddings 4bit needs --bits 4 (as quantization.embeddings: 4bit needs quantization.bits: 4)")
    if method not in METHODS:
        errors.append(f"method {method!r}: allowed {', '.join(METHODS)}")
    if bits not in (4, 8, 16):
        errors.append(f"bits {bits!r}: allowed 4, 8, 16")
    elif method in ("full", "lora") and bits != 16:
        errors.append(f"method {method} trains a 16-bit model; for a 4/8-bit base use --method qlora")
    elif method == "qlora" and bits == 16:
        errors.append("method qlora needs --bits 4 or 8; for a 16-bit base use --method lora")
    if optimizer not in OPTIMIZERS:
        errors.append(f"optimizer {optimizer!r}: allowed {', '.join(OPTIMIZERS)}")
    if device not in DEVICES:
        errors.append(f"device {device!r}: allowed {', '.join(DEVICES)}")
    errors += [f"{name} must be a positive integer, got {value!r}"
               for name, value in (("seq_len", seq_len), ("batch", batch), ("rank", rank)) if value < 1]
    if errors:
        raise ValueError("; ".join(errors))


def _training_activations(arch, method, batch, seq_len, rank, dropout, checkpointing, compute_bytes, bits, device,
                          head_bytes, loss, trained_share=1.0):
    """(saved activations, the largest transient at the peak, what that transient is)."""
    tokens = batch * seq_len
    layer = sum(layer_saved_bytes(arch, method, batch, seq_len, rank, dropout, compute_bytes, device).values())
    loss_saved, loss_peak, loss_note = head_and_loss_bytes(
        arch, batch, seq_len, compute_bytes, head_bytes, method == "full", device, loss, trained_share)
    outside = final_norm_saved(arch, tokens, compute_bytes) + loss_saved
    saved = (arch.layers * tokens * arch.hidden * compute_bytes if checkpointing else arch.layers * layer) + outside
    backward = layer_backward_bytes(arch, batch, seq_len, compute_bytes, bits) + (layer if checkpointing else 0)
    if loss_peak >= backward:
        return saved, loss_peak, loss_note
    return saved, backward, "one layer's backward working set (recomputed activations + gradients in flight)"
