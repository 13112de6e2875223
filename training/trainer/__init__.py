"""TRL's SFTTrainer configured in one place (build), its progress bar (progress), and the
adapter folder a run leaves, with its loss plot (save).
"""
