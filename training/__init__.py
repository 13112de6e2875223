"""spanish_ft training: QLoRA recipes, adapter fusion and merging, evaluation.

Run `python -m training --help` for the commands.
"""
