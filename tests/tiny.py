"""Tiny random models of each family, and tokenizers trained in-process.

Nothing is downloaded: a BPE tokenizer is trained on a few Spanish sentences, shaped like
each family's real one (Llama/Mistral: sentencepiece-style metaspace with a BOS added by
the tokenizer; Falcon: byte-level, no BOS, `<|endoftext|>` as EOS; Gemma 3: metaspace with
`<bos>` added, `<end_of_turn>` as EOS and its own `<pad>`), and a randomly initialised model
of the family's architecture is saved beside it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import FalconConfig, Gemma3TextConfig, LlamaConfig, MistralConfig, PreTrainedTokenizerFast

FAMILIES = ("llama2", "mistral", "falcon", "gemma3")

CORPUS = [
    "Eres un asistente útil que responde siempre en español, de forma clara, correcta y concisa.",
    "Eres un asistente útil, respetuoso y honesto. Responde siempre en español, de forma clara y concisa.",
    "¿Cuál es la capital de Ecuador? La capital de Ecuador es Quito.",
    "Según el artículo 71 de la Constitución, la naturaleza o Pacha Mama tiene derecho a que se respete integralmente su existencia.",
    "Resume el siguiente artículo: El Código del Trabajo regula las relaciones entre empleadores y trabajadores.",
    "Usuario: Hola, ¿cómo estás? Asistente: Muy bien, gracias. ¿En qué puedo ayudarte?",
    "[INST] <<SYS>> <</SYS>> [/INST] Escribe un correo electrónico breve para pedir una reunión el lunes.",
    "Traduce al español: The weather is nice today. El clima está agradable hoy.",
    "Clasifica el sentimiento: positivo, negativo o neutral. Respuesta: positivo.",
    "Calcula 12 más 30. El resultado es 42. Ñandú, pingüino, acción, educación, árbol, índice, único.",
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:¿?¡!()[]<>/|_-\"'\n",
]

SPECIAL = {
    "llama": ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"],
    "falcon": ["<|endoftext|>", ">>ABSTRACT<<", ">>INTRODUCTION<<"],
    # Gemma 3's ids 0-3 and its turn markers; its tokenizer adds <bos> in front
    "gemma": ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"],
}
# shape -> (bos, eos, unk, pad) of the sentencepiece-style tokenizers
METASPACE_TOKENS = {"llama": ("<s>", "</s>", "<unk>", None), "gemma": ("<bos>", "<end_of_turn>", "<unk>", "<pad>")}


def build_tokenizer(family: str, vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """A small BPE tokenizer shaped like the family's real tokenizer."""
    if family == "falcon":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIAL["falcon"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(CORPUS, trainer)
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    bos, eos, unk, pad = METASPACE_TOKENS[family]
    tok = Tokenizer(models.BPE(unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL[family])
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                       special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token=unk,
                                   **({"pad_token": pad} if pad else {}))


def build_config(family: str, vocab_size: int, hidden: int = 64, layers: int = 2):
    """A tiny config of the family's architecture; dims are multiples of 64 for NF4 blocks."""
    common = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4)
    if family == "falcon":
        return FalconConfig(**common, multi_query=True, parallel_attn=True, bias=False, alibi=False,
                            new_decoder_architecture=False, bos_token_id=0, eos_token_id=0)
    if family == "gemma3":
        # Gemma 3's shape in small: one KV head, head_dim apart from hidden/heads, tied embeddings scaled
        # by sqrt(hidden), q/k norms, a sliding-window layer before a global one
        return Gemma3TextConfig(**common, intermediate_size=hidden * 2, num_key_value_heads=1, head_dim=32,
                                max_position_embeddings=512, sliding_window=8,
                                layer_types=["sliding_attention"] * (layers - 1) + ["full_attention"],
                                pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=True)
    config_class = MistralConfig if family == "mistral" else LlamaConfig
    return config_class(**common, intermediate_size=hidden * 2, num_key_value_heads=2,
                        max_position_embeddings=512, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)


def build_model_dir(family: str, path: Path, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """Save a tiny random model + tokenizer of `family` to `path` (a from_pretrained folder)."""
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer({"falcon": "falcon", "gemma3": "gemma"}.get(family, "llama"))
    config = build_config(family, len(tokenizer), hidden=hidden, layers=layers)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return Path(path)
