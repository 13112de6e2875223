"""Memory estimate for inference and training, from a model's config.json alone (no weights).

    python -m training memory training/model_configs/mistral-7b.json --method qlora --batch 4 --seq-len 1024
    python -m training memory mistral-7b --method inference --bits 4 --json
    python -m training memory --anchors          # the 7B families next to published measurements

The estimate is the peak of one training step (or of a prefill for inference), as a sum of
named physical terms: weights, quantisation constants, LoRA weights, gradients, optimizer
states, the activations autograd saves (per decoder layer, term by term in
`training.memory_activations`), the largest short-lived buffer set at that peak (fp32 logits
and loss buffers, or one recomputed layer), the KV cache, and the CUDA context.

Assumptions (each one is a choice a run can change; the numbers move with it):
- GPU: bf16 compute under autocast; unquantised weights (embeddings, norms, lm_head) stay in
  16-bit. CPU (`--device cpu`): everything in fp32; no CUDA context; what a CPU run holds on
  top of the idle torch process (the bench subtracts that baseline).
- LoRA/QLoRA: PEFT keeps LoRA weights in fp32 (`autocast_adapter_dtype=True`, and
  `prepare_model_for_kbit_training` leaves them so); their gradients and AdamW states are fp32.
  Full fine-tuning keeps weights, gradients and torch AdamW states in the weights' dtype.
- 4-bit is bitsandbytes NF4: 0.5 byte per weight of every decoder linear layer, absmax per
  64-weight block (fp32, or 8-bit + an fp32 per 256 blocks with double quantisation).
  8-bit is LLM.int8: 1 byte per weight + an fp32 scale per output row.
- Attention is PyTorch SDPA; a training batch of more than one row has padding, so SDPA gets
  a mask (GQA heads are repeated and the mask is kept as a float bias per layer).
- The loss is transformers' cross-entropy on full fp32 logits (no chunking): for small models
  with large vocabularies that buffer, not the layers, sets the peak.

Checking a CPU estimate against peak RSS: glibc keeps freed heap memory (loading alone leaves
~0.7 GB for SmolLM2) and an fp32 checkpoint stays memory-mapped (its whole size in RSS). Run the
measured process with MALLOC_MMAP_THRESHOLD_=65536 and a 16-bit checkpoint; then SmolLM2-135M
QLoRA at batch 4 x 256 peaked 0.96 GB above the idle process, estimated 0.92 GB.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field

from training.memory_activations import layer_backward_bytes, layer_saved_bytes, prefill_bytes
from training.memory_arch import Architecture, architecture_of, load_model_config

GIB = 1024**3
METHODS = ("inference", "full", "lora", "qlora")
OPTIMIZERS = ("adamw", "paged_adamw_8bit")
DEVICES = ("cuda", "cpu")
# What torch.cuda.max_memory_allocated does not see: the CUDA context, cuBLAS/cuDNN workspaces
# and kernels, 0.5-1 GiB depending on GPU and driver (nvidia-smi shows it). We count the middle.
CUDA_CONTEXT_BYTES = int(0.75 * GIB)
NF4_BLOCK, DOUBLE_QUANT_BLOCK = 64, 256
ADAM8_BLOCK, ADAM8_MIN_NUMEL = 256, 4096  # bitsandbytes: smaller tensors keep 32-bit states


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
    lora_dropout: float = 0.05, double_quant: bool = True,
) -> Estimate:
    """Peak memory of one step of `method` at `batch` x `seq_len` tokens; see the module docstring."""
    _check_settings(method, bits, seq_len, batch, rank, optimizer, device)
    arch = architecture_of(config)
    compute_bytes = 2 if device == "cuda" else 4
    parts, notes = {}, {}
    parts["weights"], constants = _weight_bytes(arch, bits, compute_bytes, double_quant)
    notes["weights"] = _weights_note(bits, compute_bytes)
    if bits < 16:
        parts["quant_constants"] = constants
        notes["quant_constants"] = ("int8: an fp32 scale per output row" if bits == 8 else
                                    "NF4 absmax: uint8 per 64 weights + fp32 per 256 blocks" if double_quant else
                                    "NF4 absmax: fp32 per 64 weights")
    trainable = _trainable_tensors(arch, method, rank)
    if method == "inference":
        parts["kv_cache"] = 2 * arch.layers * batch * seq_len * arch.kv_heads * arch.head_dim * compute_bytes
        notes["kv_cache"] = f"K and V of {arch.layers} layers x {arch.kv_heads} KV heads x batch x seq"
        parts["prefill"] = prefill_bytes(arch, batch, seq_len, compute_bytes, bits)
        notes["prefill"] = "working set of one layer on the whole prompt + last-token logits (fp32)"
    else:
        _add_training_parts(parts, notes, arch, trainable, method, optimizer, compute_bytes)
        parts["activations"], parts["peak_transient"], notes["peak_transient"] = _training_activations(
            arch, method, batch, seq_len, rank, lora_dropout, gradient_checkpointing, compute_bytes, bits, device)
        notes["activations"] = ("one checkpointed hidden state per layer" if gradient_checkpointing
                                else "everything autograd saves in every layer")
    if device == "cuda":
        parts["cuda_context"] = CUDA_CONTEXT_BYTES
        notes["cuda_context"] = "CUDA context + library workspaces (0.5-1 GiB; not in torch's allocator stats)"
    settings = dict(method=method, bits=bits, seq_len=seq_len, batch=batch, rank=rank,
                    gradient_checkpointing=gradient_checkpointing, optimizer=optimizer, device=device,
                    lora_dropout=lora_dropout, double_quant=double_quant)
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
    parts["optimizer_states"] = _optimizer_bytes(trainable, param_bytes, optimizer)
    notes["optimizer_states"] = ("AdamW exp_avg + exp_avg_sq in the weights' dtype" if optimizer == "adamw" else
                                 "8-bit AdamW: 2 bytes per weight + fp32 absmax per 256")


def _check_settings(method, bits, seq_len, batch, rank, optimizer, device) -> None:
    errors = []
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


def _weight_bytes(arch: Architecture, bits: int, compute_bytes: int, double_quant: bool) -> tuple[int, int]:
    """(weights, quantisation constants); only decoder linear weights are quantised, never lm_head."""
    if bits == 16:
        return arch.total_params * compute_bytes, 0
    layer_weights = layer_constants = 0
    for linear in arch.linears:
        numel = linear.in_features * linear.out_features
        if bits == 8:
            layer_weights += numel
            layer_constants += 4 * linear.out_features
        else:
            blocks = math.ceil(numel / NF4_BLOCK)
            layer_weights += math.ceil(numel / 2)
            # double quantisation: uint8 absmax per block, an fp32 absmax per 256 blocks and one offset
            layer_constants += blocks + 4 * math.ceil(blocks / DOUBLE_QUANT_BLOCK) + 4 if double_quant else 4 * blocks
    unquantised = arch.total_params - arch.layers * arch.linear_weights_per_layer
    return unquantised * compute_bytes + arch.layers * layer_weights, arch.layers * layer_constants


def _weights_note(bits: int, compute_bytes: int) -> str:
    dtype = "bf16" if compute_bytes == 2 else "fp32"
    if bits == 16:
        return f"all weights in {dtype}"
    per_weight = "0.5 byte (NF4)" if bits == 4 else "1 byte (int8)"
    return f"decoder linears {per_weight} per weight; embeddings, norms, biases, lm_head in {dtype}"


def _trainable_tensors(arch: Architecture, method: str, rank: int) -> list[int]:
    """numel of every trainable tensor (the 8-bit optimizer treats small tensors differently)."""
    if method == "inference":
        return []
    if method == "full":
        return [arch.total_params]  # one entry is enough: every tensor of a 7B is above 4096 elements
    per_layer = [n for linear in arch.linears for n in (rank * linear.in_features, rank * linear.out_features)]
    return per_layer * arch.layers


def _optimizer_bytes(trainable: list[int], param_bytes: int, optimizer: str) -> int:
    if optimizer == "adamw":  # torch keeps exp_avg and exp_avg_sq in the parameter's dtype
        return 2 * param_bytes * sum(trainable)
    total = 0
    for numel in trainable:
        if numel < ADAM8_MIN_NUMEL:
            total += 8 * numel
        else:  # two uint8 states + one fp32 absmax per 256-element block for each
            total += 2 * numel + 2 * 4 * math.ceil(numel / ADAM8_BLOCK)
    return total


def _training_activations(arch, method, batch, seq_len, rank, dropout, checkpointing, compute_bytes, bits, device):
    """(saved activations, the largest transient at the peak, what that transient is)."""
    tokens = batch * seq_len
    layer = sum(layer_saved_bytes(arch, method, batch, seq_len, rank, dropout, compute_bytes, device).values())
    # The final norm saves its fp32 input; the loss keeps log-softmax (fp32) for backward.
    outside = tokens * (4 * arch.hidden + 8)
    saved = (arch.layers * tokens * arch.hidden * compute_bytes if checkpointing else arch.layers * layer) + outside
    # At the loss backward: saved log-softmax + its incoming gradient + the logits' gradient, all fp32.
    logits = 3 * 4 * tokens * arch.vocab
    backward = layer_backward_bytes(arch, batch, seq_len, compute_bytes, bits) + (layer if checkpointing else 0)
    if logits >= backward:
        return saved, logits, "fp32 logits and loss buffers at the loss backward (3 x tokens x vocab x 4 bytes)"
    return saved, backward, "one layer's backward working set (recomputed activations + gradients in flight)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="config.json, model folder, shipped name (mistral-7b) or hub id")
    parser.add_argument("--method", choices=METHODS, default="qlora")
    parser.add_argument("--bits", type=int, choices=(4, 8, 16), help="default: 4 for qlora, 16 otherwise")
    parser.add_argument("--seq-len", type=int, default=1024, help="tokens per row (default: the recipes' 1024)")
    parser.add_argument("--batch", type=int, default=4, help="rows per step (default: the recipes' 4)")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank, every linear layer a target")
    parser.add_argument("--lora-dropout", type=float, default=0.05, help="LoRA dropout (0 saves activations)")
    parser.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    parser.add_argument("--device", choices=DEVICES, default="cuda", help="cpu: fp32, no CUDA context")
    parser.add_argument("--no-double-quant", dest="double_quant", action="store_false")
    parser.add_argument("--json", action="store_true", help="print the estimate as JSON")
    parser.add_argument("--anchors", action="store_true", help="the 7B families next to published measurements")


def run(args: argparse.Namespace) -> int:
    from training.memory_report import print_anchors, render_table

    if args.anchors:
        print_anchors(as_json=args.json)
        return 0
    if not args.model:
        raise ValueError("give a model: a config.json, a model folder, a shipped name (mistral-7b) or a hub id")
    bits = args.bits or (4 if args.method == "qlora" else 16)
    result = estimate(load_model_config(args.model), args.method, bits, args.seq_len, args.batch, args.rank,
                      args.gradient_checkpointing, args.optimizer, args.device, args.lora_dropout, args.double_quant)
    print(json.dumps(result.to_dict(), indent=2) if args.json else render_table(result))
    return 0
