"""Base model vs adapters on held-out data: loss, chrF, citations (evaluate: the `evaluate` command),
greedy answers and answer-only loss (generate), the report files and chart (report), the machine and
presets a report records (machine), and several families' reports in one (compare: the `compare` command).
"""
