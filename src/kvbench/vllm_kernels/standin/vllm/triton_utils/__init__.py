"""kvbench's stand-in for vllm.triton_utils (not vLLM's code): Triton itself, as `triton` and `tl`."""

import triton
import triton.language as tl

__all__ = ["tl", "triton"]
