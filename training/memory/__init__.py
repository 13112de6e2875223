"""The memory estimator (torch-free, so the webui extension can use it): estimate() and its
settings (estimate), the architecture read from a config (arch), weights and optimizer
(weights), activations (activations), LM head and loss (loss), the table and CLI (report),
the peak of one training recipe and when gradient checkpointing can go (recipe),
and the configs of the supported models (configs/).
"""
