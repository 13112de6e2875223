"""TRL's SFTTrainer configured in one place (build), its progress bar (progress), a checkpoint on
Ctrl-C or SIGTERM (interrupt), and the folders a run claims and leaves, with its loss plot (save).
"""
