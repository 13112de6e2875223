"""Training data: rows read from a file or the hub (read) -> conversations (conversations) -> token ids
with answer-only labels (tokens) -> batches, padded or packed (batches) -> prepared splits (prepare).
"""
