"""The math of LoRA fusion on safetensors tensors: exact stacking along the rank, SVD compression.

A LoRA module adds `s * B @ A` to a base weight (A: r x d_in, B: d_out x r; s = alpha / r, or
alpha / sqrt(r) with rsLoRA). For sources i with user weights w_i, the fused delta
`sum_i w_i s_i B_i A_i` equals `B_cat @ A_cat` where A_cat stacks `sqrt|c_i| A_i` along the rank
and B_cat puts `sign(c_i) sqrt|c_i| B_i` side by side (c_i = w_i s_i): exact, of rank sum r_i,
with scaling 1. The square root splits each scale evenly so neither factor grows or shrinks
much in 16-bit storage. `compress_svd` lowers the rank through the small R x R Gram matrices of the two thin factors
and an SVD of an R x R core, so the d_out x d_in delta of a 7B layer is never formed.
Used by `training/adapters/fuse.py`; needs only torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

# PEFT saves Linear LoRA as `<module>.lora_A.weight` and Embedding LoRA as `<module>.lora_embedding_A`.
A_TO_B = {"lora_A.weight": "lora_B.weight", "lora_embedding_A": "lora_embedding_B"}
KEY_RE = re.compile(r"^(?P<module>.+)\.(?P<part>lora_A\.weight|lora_B\.weight|lora_embedding_A|lora_embedding_B)$")
# PeftModel state dicts prefix module names with this; PEFT matches patterns without it.
PEFT_PREFIX = "base_model.model."


@dataclass(frozen=True)
class LoraFactors:
    a: torch.Tensor  # r x d_in (Embedding: r x num_embeddings)
    b: torch.Tensor  # d_out x r
    a_key: str
    b_key: str


def split_lora_tensors(tensors: dict, where: str) -> dict[str, LoraFactors]:
    """{module key: its A and B} from one adapter's tensors; any other tensor is refused."""
    found: dict[str, dict] = {}
    for key, tensor in tensors.items():
        match = KEY_RE.match(key)
        if match is None:
            raise ValueError(
                f"{where}: tensor {key!r} is not a LoRA A/B matrix saved by PEFT (expected keys ending in "
                "'.lora_A.weight', '.lora_B.weight', '.lora_embedding_A' or '.lora_embedding_B'); an adapter "
                "with extra trained tensors (biases, DoRA magnitudes, saved modules, embeddings) "
                "cannot be fused exactly"
            )
        found.setdefault(match["module"], {})[match["part"]] = (key, tensor)
    modules = {}
    for module, parts in found.items():
        a_part = "lora_A.weight" if "lora_A.weight" in parts else "lora_embedding_A"
        if set(parts) != {a_part, A_TO_B[a_part]}:
            raise ValueError(f"{where}: module {module!r} has tensors {sorted(parts)}; expected one A and one B")
        (a_key, a), (b_key, b) = parts[a_part], parts[A_TO_B[a_part]]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ValueError(
                f"{where}: module {module!r} has A {tuple(a.shape)} and B {tuple(b.shape)}; only Linear and "
                "Embedding LoRA layers (A: r x d_in, B: d_out x r) can be fused"
            )
        modules[module] = LoraFactors(a, b, a_key, b_key)
    if not modules:
        raise ValueError(f"{where}: the adapter holds no LoRA tensors")
    return modules


def pattern_value(pattern: dict, module: str, default):
    """PEFT's `rank_pattern`/`alpha_pattern` lookup (peft.utils.other.get_pattern_key, 0.18-0.21)."""
    name = module.removeprefix(PEFT_PREFIX)
    for key, value in (pattern or {}).items():
        if re.match(rf"(.*\.)?({key})$", name):
            return value
    return default


def module_scale(config: dict, module: str, rank: int, where: str) -> float:
    """The scaling PEFT applies to `module` of an adapter with this config (alpha / r or alpha / sqrt r)."""
    config_rank = pattern_value(config.get("rank_pattern"), module, config.get("r", 8))
    if config_rank != rank:
        raise ValueError(
            f"{where}: module {module!r} has rank {rank} in its weights but r={config_rank} in adapter_config.json "
            "(r / rank_pattern); the folder's weights and config do not belong together"
        )
    alpha = pattern_value(config.get("alpha_pattern"), module, config.get("lora_alpha", 8))
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


def stack_factors(parts: list[tuple[LoraFactors, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(A_cat, B_cat) in float32 with B_cat @ A_cat == sum of coef * B @ A over the parts."""
    total_rank = sum(factors.a.shape[0] for factors, _ in parts)
    first = parts[0][0]
    a_cat = torch.empty(total_rank, first.a.shape[1])
    b_cat = torch.empty(first.b.shape[0], total_rank)
    row = 0
    for factors, coef in parts:
        root, rank = math.sqrt(abs(coef)), factors.a.shape[0]
        torch.mul(factors.a.float(), root, out=a_cat[row : row + rank])
        torch.mul(factors.b.float(), math.copysign(root, coef), out=b_cat[:, row : row + rank])
        row += rank
    return a_cat, b_cat


@dataclass(frozen=True)
class Compressed:
    a: torch.Tensor
    b: torch.Tensor
    delta_sq: float  # squared Frobenius norm of the exact delta
    dropped_sq: float  # squared Frobenius norm of what the truncation drops

    @property
    def error(self) -> float:
        """Relative Frobenius error ||delta - delta_k|| / ||delta|| (0 for a zero delta)."""
        return math.sqrt(self.dropped_sq / self.delta_sq) if self.delta_sq > 0 else 0.0


def _orthonormalizer(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(F, P) for a tall x (n x R): Q = x @ P has orthonormal columns and x = Q @ F.

    From the eigendecomposition of the small float64 Gram matrix x^T x; directions whose
    singular value is below 1e-7 of the largest (numerically null, e.g. a weight-0 source)
    are left out, which changes the delta by less than float32 rounding.
    """
    values, vectors = torch.linalg.eigh(x.T @ x)
    keep = values > values.max().clamp(min=0) * 1e-14
    root = values[keep].sqrt()
    return root[:, None] * vectors[:, keep].T, vectors[:, keep] / root


def compress_svd(a_cat: torch.Tensor, b_cat: torch.Tensor, rank: int) -> Compressed:
    """The best rank-`rank` approximation of B_cat @ A_cat, as LoRA factors, without forming the delta.

    B_cat = Qb Fb and A_cat^T = Qa Fa with orthonormal Qb, Qa (from R x R Gram matrices), so
    delta = Qb (Fb Fa^T) Qa^T; the SVD U S V^T of that small core gives delta = (Qb U) S (Qa V)^T,
    hence the dropped singular values measure the error exactly. Both new factors are the old
    ones times an R x rank matrix: one thin matrix product each, whatever d_out and d_in are.
    The output rank is min(rank, R, d_out, d_in), padded with zeros if the delta has lower rank.
    """
    fb, pb = _orthonormalizer(b_cat.double())
    fa, pa = _orthonormalizer(a_cat.double().T)
    u, s, vh = torch.linalg.svd(fb @ fa.T, full_matrices=False)
    out_rank = min(rank, a_cat.shape[0], a_cat.shape[1], b_cat.shape[0])
    keep = min(out_rank, s.numel())
    root = s[:keep].sqrt()
    to_b = torch.zeros(b_cat.shape[1], out_rank, dtype=torch.float64)
    to_b[:, :keep] = pb @ (u[:, :keep] * root)
    to_a = torch.zeros(out_rank, a_cat.shape[0], dtype=torch.float64)
    to_a[:keep] = (root[:, None] * vh[:keep]) @ pa.T
    energy = s.square()
    return Compressed(to_a.float() @ a_cat, b_cat @ to_b.float(), float(energy.sum()), float(energy[keep:].sum()))
