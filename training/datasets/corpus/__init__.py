"""The law's own text: one JSONL file per norm, one row per article, built from the norm's PDF.

    python -m training corpus build --pdf constitucion.pdf --norma CRE --edition "R.O. 449, 20-X-2008; ..."

pdf (the text layer, without page furniture) -> articles (split, publisher matter removed) -> build
(the `corpus` command: rows, the folder's manifest corpus.json) -> read (what retrieval, the
validator and training load). The shipped corpus is training/datasets/leyes-ec/corpus/.
"""
