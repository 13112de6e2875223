"""The tokenizer of an exported GGUF: vocabulary, merges, special tokens and chat template, from the HF tokenizer.

A GGUF carries no tokenizer.json; llama.cpp rebuilds the tokenizer from `tokenizer.ggml.*` keys.
The bundle's families use BPE vocabularies (tokenizer.json), in one of two shapes:
- sentencepiece-style ("llama": Llama-2, Mistral, Gemma 3; metaspace `▁`, byte fallback): llama.cpp
  merges the pair whose result has the highest score, so each token made by a merge scores minus that
  merge's rank, which replays the BPE merge order; `<0xNN>` tokens are bytes. When the tokenizer puts
  "▁" before the text (Llama-2, Mistral; `add_space_prefix`), llama.cpp prefixes it to the text after
  every special token, as Meta's sentencepiece did (`<s>[INST]` -> `<s> ▁[INST]`); an HF tokenizer with
  Metaspace prepend_scheme "first" does so only at the start. Gemma's adds none, and neither does llama.cpp;
- byte-level ("gpt2": Falcon, SmolLM2): llama.cpp needs the merges and `tokenizer.ggml.pre`, the name
  of its pre-tokenizer regex. That name is a property of the vocabulary (llama.cpp's converter
  finds it from a hash of the tokenizer's output): known vocabularies by the sha256 of their token
  list, otherwise from the tokenizer's pre-tokenizer steps; a shape not listed is refused, since a
  wrong regex would silently tokenise differently.
Tokens the tokenizer marks special become CONTROL (matched whole, like `<|im_end|>`), other added
tokens USER_DEFINED; ids the model has beyond the tokenizer become unused `[PADn]` tokens.
BOS/EOS/UNK/PAD ids and whether BOS/EOS are added come from the tokenizer itself (EOS `</s>`,
`<|endoftext|>`, `<|im_end|>` or `<end_of_turn>`; llama.cpp also ends generation at the turn-end tokens
it knows by name, such as Gemma's `<end_of_turn>` and `<eos>`, as for a file of its own converter), and
the chat template is the bundle's instruction template, so that llama.cpp's own chat formatting
(llama-server --jinja) builds the prompt the adapter learned.
"""

from __future__ import annotations

import hashlib
import json

import gguf

# llama.cpp's vocabulary kinds and pre-tokenizers are named after the architectures that brought them (its names,
# not the bundle's families): its "llama" vocabulary is sentencepiece-style, its "falcon" pre-tokenizer Falcon's
LLAMA_STYLE, BYTE_LEVEL = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA], "gpt2"
FALCON_PRE = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.FALCON]
# sha256 of "\n".join(tokens by id) -> llama.cpp pre-tokenizer; SmolLM2 (the CPU demo model) splits digits
KNOWN_VOCABULARIES = {"d1f2ce856b324081b621d9e2e8dbd22879f462329f3fd4aa39fa758dddb2ce55": "smollm"}
# the pre-tokenizer steps of a byte-level tokenizer.json -> llama.cpp pre-tokenizer
PRE_BY_STEPS = {("ByteLevel",): "gpt-2", ("Digits", "ByteLevel"): "smollm",
                ("Punctuation", "ByteLevel", "Digits"): FALCON_PRE, ("Punctuation", "Digits", "ByteLevel"): FALCON_PRE}
TOKEN = gguf.TokenType


def tokenizer_spec(tokenizer) -> dict:
    """The fast tokenizer's tokenizer.json as a dict; refused unless it is a BPE of a shape this exporter knows."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{tokenizer.name_or_path}: a fast tokenizer (tokenizer.json) is needed for GGUF export")
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "BPE":
        raise ValueError(f"{tokenizer.name_or_path}: a {spec['model']['type']} tokenizer cannot be exported here "
                         "(only BPE vocabularies)")
    return spec


def steps_of(component) -> list[dict]:
    """The steps of a tokenizer.json component (a Sequence is flattened)."""
    if not component:
        return []
    steps = component.get("pretokenizers") or component.get("normalizers") or component.get("decoders")
    return [s for step in steps for s in steps_of(step)] if steps else [component]


def step_types(component) -> list[str]:
    return [step["type"] for step in steps_of(component)]


def adds_space_prefix(spec: dict) -> bool:
    """Whether the tokenizer puts "▁" before the text: a Metaspace that prepends (Llama-2 and Mistral's older
    tokenizer.json, the tiny ones) or a Prepend normalizer (Llama-2's newer one); Gemma's only replaces spaces."""
    metaspaces = [step for step in steps_of(spec.get("pre_tokenizer")) if step["type"] == "Metaspace"]
    prepends = [step for step in steps_of(spec.get("normalizer")) if step["type"] == "Prepend"]
    return any(map(_prepends, metaspaces)) or any(step.get("prepend") == "▁" for step in prepends)


def _prepends(metaspace: dict) -> bool:
    # tokenizers since 0.19 write prepend_scheme ("first", "always", "never"), older ones add_prefix_space
    scheme = metaspace.get("prepend_scheme") or ("always" if metaspace.get("add_prefix_space", True) else "never")
    return scheme != "never"


def vocabulary_kind(spec: dict, where: str) -> str:
    steps = {*step_types(spec.get("pre_tokenizer")), *step_types(spec.get("decoder"))}
    if "ByteLevel" in steps:
        return BYTE_LEVEL
    if "Metaspace" in steps or adds_space_prefix(spec) or spec["model"].get("byte_fallback"):
        return LLAMA_STYLE
    raise ValueError(f"{where}: neither a sentencepiece-style nor a byte-level BPE tokenizer (steps: "
                     f"{', '.join(sorted(steps)) or 'none'}); it cannot be exported to GGUF here")


def pre_tokenizer_name(spec: dict, tokens: list[str], where: str) -> str:
    known = KNOWN_VOCABULARIES.get(hashlib.sha256("\n".join(tokens).encode("utf-8")).hexdigest())
    steps = tuple(step_types(spec.get("pre_tokenizer")))
    name = known or PRE_BY_STEPS.get(steps)
    if name is None:
        raise ValueError(f"{where}: llama.cpp has no pre-tokenizer known to match this tokenizer's steps "
                         f"({', '.join(steps)}); export it with llama.cpp's convert_hf_to_gguf.py instead")
    return name


def merge_list(spec: dict) -> list[str]:
    return [m if isinstance(m, str) else " ".join(m) for m in spec["model"].get("merges", [])]


def token_table(tokenizer, vocab_size: int, kind: str) -> tuple[list[str], list[int]]:
    """(token text by id, gguf token type by id) for `vocab_size` ids.

    Only a sentencepiece-style vocabulary has an UNKNOWN token (`<unk>`); byte-level ones spell every
    text, and name a special token such as `<|endoftext|>` as unk, which must stay CONTROL.
    """
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    if len(by_id) > vocab_size or max(by_id) >= vocab_size:
        raise ValueError(f"{tokenizer.name_or_path}: the tokenizer has {len(by_id)} tokens but the model only "
                         f"{vocab_size} embedding rows; resize the model's embeddings before exporting")
    added = tokenizer.added_tokens_decoder
    special_ids = set(tokenizer.all_special_ids) | {i for i, token in added.items() if token.special}
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        tokens.append(token if token is not None else f"[PAD{index}]")
        if token is None:
            types.append(TOKEN.UNUSED)
        elif index == tokenizer.unk_token_id and kind == LLAMA_STYLE:
            types.append(TOKEN.UNKNOWN)
        elif index in special_ids:
            types.append(TOKEN.CONTROL)
        elif index in added:
            types.append(TOKEN.USER_DEFINED)
        elif len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            types.append(TOKEN.BYTE)
        else:
            types.append(TOKEN.NORMAL)
    return tokens, types


def merge_scores(tokens: list[str], merges: list[str]) -> list[float]:
    """Minus the rank of the merge that makes each token (first merge: 0); tokens no merge makes score lowest."""
    rank = {}
    for index, merge in enumerate(merges):
        rank.setdefault(merge.replace(" ", "", 1), index)
    lowest = -float(len(merges) + 1)
    return [-float(rank[token]) if token in rank else lowest for token in tokens]


def adds_token(tokenizer, token_id: int | None, position: int) -> bool:
    """Whether the tokenizer puts `token_id` at `position` (0: BOS, -1: EOS) of an encoded text."""
    ids = tokenizer("a").input_ids
    return token_id is not None and bool(ids) and ids[position] == token_id


def check_tokenizer(tokenizer, vocab_size: int) -> None:
    """Refuse, before any weights load, a tokenizer that add_tokenizer cannot write faithfully."""
    where = str(tokenizer.name_or_path)
    spec = tokenizer_spec(tokenizer)
    kind = vocabulary_kind(spec, where)
    tokens, _ = token_table(tokenizer, vocab_size, kind)
    if kind == BYTE_LEVEL:
        pre_tokenizer_name(spec, tokens, where)


def add_tokenizer(writer: gguf.GGUFWriter, tokenizer, vocab_size: int, chat_template: str) -> str:
    """Write the `tokenizer.*` keys; returns the vocabulary kind ("llama" or "gpt2")."""
    where = str(tokenizer.name_or_path)
    spec = tokenizer_spec(tokenizer)
    kind = vocabulary_kind(spec, where)
    tokens, types = token_table(tokenizer, vocab_size, kind)
    merges = merge_list(spec)
    writer.add_tokenizer_model(kind)
    writer.add_tokenizer_pre("default" if kind == LLAMA_STYLE else pre_tokenizer_name(spec, tokens, where))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if kind == LLAMA_STYLE:
        writer.add_token_scores(merge_scores(tokens, merges))
        writer.add_add_space_prefix(adds_space_prefix(spec))
    writer.add_token_merges(merges)
    for name in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{name}_token_id")
        if token_id is not None:
            getattr(writer, f"add_{name}_token_id")(token_id)
    writer.add_add_bos_token(adds_token(tokenizer, tokenizer.bos_token_id, 0))
    writer.add_add_eos_token(adds_token(tokenizer, tokenizer.eos_token_id, -1))
    writer.add_chat_template(chat_template)
    return kind
