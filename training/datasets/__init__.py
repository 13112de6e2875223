"""The shipped Spanish datasets (instrucciones-es/, leyes-ec/, their data card README.md), the
legal citations they use (citations), the validator (validate), and article-named questions
derived from verified rows (derivation: the rule; derive: the command).
"""
