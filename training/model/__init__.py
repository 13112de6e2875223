"""The base model for training: tokenizer and 4-bit load with LoRA (load), frozen embeddings
and LM head (embeddings), stacking on a frozen adapter (stacking), LoRA dropout drawn once per
input (dropout), NF4 layers in the autocast dtype (autocast), gradient checkpointing `auto`
(checkpointing).
"""
