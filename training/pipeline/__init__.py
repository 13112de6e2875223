"""One family's whole experiment as one command: the plan and its memory check (plan), the two
adapters trained in order, reused or resumed, and fused (steps), the evaluation and the run (pipeline:
the `pipeline` command), the webui install (webui). The CPU demo (training/demo/) is this pipeline on
the demo model.
"""
