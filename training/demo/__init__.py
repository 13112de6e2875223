"""The CPU demo, README's first command: the demo model (model), adapters, evaluation and the
side-by-side answers (run), and the optional webui install (webui).
"""
