"""mixweave: how much of each source, and in what order, for LLM pretraining."""

__version__ = "0.1.0"
