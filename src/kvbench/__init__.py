"""kvbench: a correct, explained, per-commit benchmark of vLLM's KV-cache write kernels."""

__version__ = "0.1.0"
