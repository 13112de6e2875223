"""The base model for training: tokenizer and 4-bit load with LoRA (load), frozen embeddings
and LM head (embeddings), and stacking on a frozen adapter (stacking).
"""
