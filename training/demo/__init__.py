"""The CPU demo, README's first command: the pipeline (training/pipeline/) run on the demo model,
plus the model itself (model: the `fetch-demo-model` command) and the side-by-side answers (demo: the
`demo` command).
"""
