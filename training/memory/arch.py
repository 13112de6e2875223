"""A decoder's shapes from its config.json (local, shipped or from the hub): layers, linears, parameters.

Covers the bundle's families generically from config fields: Llama, Mistral and Gemma 3 (separate
q/k/v/o projections, gated MLP, RMSNorm) and Falcon (fused query_key_value, multi-query or grouped
KV in the new decoder architecture, parallel attention, LayerNorm). Original Falcon configs
(`RefinedWeb*`, `n_embd`/`n_head`/`n_layer`) are read too. Gemma 3 adds to the Llama shape: four
RMSNorms per layer (before and after attention and the MLP) that scale by (1 + weight), RMSNorms
on each head's queries and keys, head_dim apart from hidden/heads, tied embeddings, and
sliding-window layers (`layer_types`) beside full-attention ones; Mistral with a `sliding_window`
slides in every layer.

    arch = architecture_of(load_model_config("mistral-7b"))  # or a config.json, a model folder, a hub id
    arch.total_params   # 7241732096, what model.num_parameters() reports
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from training.families import BY_LAYER_TYPE, EVERY_LAYER, FAMILIES, FUSED_QKV, family_of_model_type

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class Linear:
    name: str
    in_features: int
    out_features: int
    bias: bool


@dataclass(frozen=True)
class Architecture:
    """One decoder-only model; `linears` are one decoder layer's linear layers (all LoRA targets)."""

    name: str
    family: str  # the model's family (training/families.py)
    decoder: str  # the family's decoder layout: families.SEPARATE_QKV (Llama, Mistral, Gemma 3) or FUSED_QKV (Falcon)
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    linears: tuple[Linear, ...]
    norm_params: int  # per decoder layer
    final_norm_params: int
    parallel_attn: bool = False
    layer_norms: int = 2  # norms per decoder layer (Falcon's parallel attention has one, Gemma 3 four)
    qk_norm: bool = False  # an RMSNorm on each head's queries and keys (Gemma 3)
    norm_plus_one: bool = False  # RMSNorm scales by (1 + weight), a new fp32 tensor per call (Gemma)
    sliding_window: int = 0  # tokens a sliding-window layer attends to (0: none)
    sliding_layers: int = 0  # how many of the layers use it

    @property
    def layer_kinds(self) -> dict[bool, int]:
        """{sliding: how many layers} for the kinds of layer this model has (attention differs between them)."""
        return {sliding: count for sliding, count in ((False, self.layers - self.sliding_layers),
                                                      (True, self.sliding_layers)) if count}

    @property
    def linear_weights_per_layer(self) -> int:
        return sum(linear.in_features * linear.out_features for linear in self.linears)

    @property
    def layer_params(self) -> int:
        biases = sum(linear.out_features for linear in self.linears if linear.bias)
        return self.linear_weights_per_layer + biases + self.norm_params

    @property
    def total_params(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return embeddings + self.layers * self.layer_params + self.final_norm_params


def load_model_config(model_or_config: str) -> dict:
    """config.json of a local file, a model folder, a shipped name (`mistral-7b`) or a hub id."""
    path = Path(model_or_config)
    shipped = CONFIGS_DIR / f"{model_or_config}.json"
    if path.is_dir():
        path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{model_or_config}: no config.json in this folder")
    elif not path.exists() and shipped.is_file():
        path = shipped
    elif not path.exists():
        path = _download_config(model_or_config)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a JSON config file: {err}") from err


def _download_config(repo_id: str) -> Path:
    names = ", ".join(sorted(p.stem for p in CONFIGS_DIR.glob("*.json")))
    if repo_id.count("/") != 1:
        raise FileNotFoundError(f"{repo_id}: no such file or folder, and not a hub id (owner/name); "
                                f"shipped configs: {names}")
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, "config.json"))
    except Exception as err:  # offline, unreachable, gated, missing: all end the same way for the user
        raise FileNotFoundError(
            f"could not download config.json of hub model {repo_id!r} ({type(err).__name__}: {str(err)[:160]}). "
            f"Offline? Pass a local config.json instead: python -m training memory path/to/config.json "
            f"(or a model folder, or a shipped config: {names})"
        ) from err


def _field(config: dict, *keys: str, default=None):
    """The first of `keys` present in `config` (configs differ in naming), or `default`."""
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    if default is None:
        raise ValueError(f"config.json: none of {', '.join(keys)} is set; this field is needed to estimate memory")
    return default


def architecture_of(config: dict) -> Architecture:
    model_type = config.get("model_type")
    family = family_of_model_type(model_type)
    if family is None:
        supported = ", ".join(model_type for known in FAMILIES.values() for model_type in known.model_types)
        raise ValueError(f"config.json: model_type {model_type!r} is not supported; supported: {supported}")
    arch = (_falcon if FAMILIES[family].decoder == FUSED_QKV else _llama)(config, family)
    name = config.get("_name_or_path") or (config.get("architectures") or [family])[0]
    return dataclasses.replace(arch, name=name)


def _llama(config: dict, family: str) -> Architecture:
    hidden = _field(config, "hidden_size")
    heads = _field(config, "num_attention_heads")
    kv_heads = _field(config, "num_key_value_heads", default=heads)
    head_dim = _field(config, "head_dim", default=hidden // heads)
    inter = _field(config, "intermediate_size")
    attn_bias, mlp_bias = bool(config.get("attention_bias")), bool(config.get("mlp_bias"))
    linears = (
        Linear("q_proj", hidden, heads * head_dim, attn_bias),
        Linear("k_proj", hidden, kv_heads * head_dim, attn_bias),
        Linear("v_proj", hidden, kv_heads * head_dim, attn_bias),
        Linear("o_proj", heads * head_dim, hidden, attn_bias),
        Linear("gate_proj", hidden, inter, mlp_bias),
        Linear("up_proj", hidden, inter, mlp_bias),
        Linear("down_proj", inter, hidden, mlp_bias),
    )
    layers = _field(config, "num_hidden_layers")
    # Gemma 3: RMSNorms before and after attention and the MLP, and on each head's queries and keys
    gemma = FAMILIES[family].sandwich_norms
    return Architecture(
        name=family, family=family, decoder=FAMILIES[family].decoder, hidden=hidden, intermediate=inter, layers=layers,
        heads=heads, kv_heads=kv_heads, head_dim=head_dim, vocab=_field(config, "vocab_size"),
        tied_embeddings=bool(config.get("tie_word_embeddings", gemma)), linears=linears,
        norm_params=(4 * hidden + 2 * head_dim) if gemma else 2 * hidden, final_norm_params=hidden,  # RMSNorm: a weight
        layer_norms=4 if gemma else 2, qk_norm=gemma, norm_plus_one=gemma,
        sliding_window=config.get("sliding_window") or 0, sliding_layers=_sliding_layers(config, family, layers),
    )


def _sliding_layers(config: dict, family: str, layers: int) -> int:
    """How many layers attend through a sliding window, as transformers builds them."""
    rule = FAMILIES[family].sliding_window
    if not config.get("sliding_window") or rule not in (EVERY_LAYER, BY_LAYER_TYPE):
        return 0
    if rule == EVERY_LAYER:
        return layers
    # BY_LAYER_TYPE: `layer_types`, or every `sliding_window_pattern`-th layer global (default 6)
    pattern = config.get("sliding_window_pattern") or config.get("_sliding_window_pattern") or 6
    types = config.get("layer_types") or ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention"
                                          for i in range(layers)]
    if len(types) != layers:
        raise ValueError(f"config.json: layer_types has {len(types)} entries for num_hidden_layers {layers}")
    return types.count("sliding_attention")


def _falcon(config: dict, family: str) -> Architecture:
    hidden = _field(config, "hidden_size", "n_embd", "n_embed")
    heads = _field(config, "num_attention_heads", "n_head")
    head_dim = hidden // heads
    new_arch = bool(config.get("new_decoder_architecture", False))
    multi_query = bool(config.get("multi_query", True))
    # Same rule as FalconAttention: grouped KV in the new architecture, else one KV head (MQA) or all.
    kv_heads = _field(config, "num_kv_heads", "n_head_kv", default=heads) if new_arch else (1 if multi_query else heads)
    ffn = _field(config, "ffn_hidden_size", default=4 * hidden)
    parallel = bool(config.get("parallel_attn", True))
    bias = bool(config.get("bias", False))
    linears = (
        Linear("query_key_value", hidden, (heads + 2 * kv_heads) * head_dim, bias),
        Linear("dense", hidden, hidden, bias),
        Linear("dense_h_to_4h", hidden, ffn, bias),
        Linear("dense_4h_to_h", ffn, hidden, bias),
    )
    ln_in_parallel = config.get("num_ln_in_parallel_attn") or (2 if new_arch else 1)
    norms = 2 if not parallel or (new_arch and ln_in_parallel == 2) else 1
    return Architecture(
        name=family, family=family, decoder=FUSED_QKV, hidden=hidden, intermediate=ffn,
        layers=_field(config, "num_hidden_layers", "n_layer"), heads=heads, kv_heads=kv_heads, head_dim=head_dim,
        vocab=_field(config, "vocab_size"), tied_embeddings=bool(config.get("tie_word_embeddings", True)),
        linears=linears, norm_params=norms * 2 * hidden, final_norm_params=2 * hidden,  # LayerNorm: weight + bias
        parallel_attn=parallel, layer_norms=norms,
    )
