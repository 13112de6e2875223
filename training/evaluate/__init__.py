"""Base model vs adapters on held-out data: loss, chrF, citations (compare), greedy answers and
answer-only loss (generate), the report files and chart (report).
"""
