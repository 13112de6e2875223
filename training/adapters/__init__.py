"""Adapter folders: the PEFT files read through one strict door (folder; its checks in adapter_config and
safetensors_header), the training record (record: its one home), the model card,
LoRA factors and what fuses exactly (factors, fusable), fusion (fuse) and merging into the base (merge).
"""
