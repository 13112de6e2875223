"""Adapter folders: the PEFT files (folder), the training record (record: its one home), the model card,
LoRA factors and what fuses exactly (factors, fusable), fusion (fuse) and merging into the base (merge).
"""
