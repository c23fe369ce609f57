"""kvbench's stand-in for vllm.v1.kv_cache_interface (not vLLM's code): the quantization modes vLLM's per-token-head
Triton write op dispatches on (kvbench measures INT8_ and FP8_PER_TOKEN_HEAD), and is_quantized_kv_cache."""

import enum

from vllm.utils.torch_utils import is_quantized_kv_cache

__all__ = ["KVQuantMode", "is_quantized_kv_cache"]


class KVQuantMode(enum.IntEnum):
    NONE = enum.auto()
    FP8_PER_TENSOR = enum.auto()
    INT8_PER_TOKEN_HEAD = enum.auto()
    FP8_PER_TOKEN_HEAD = enum.auto()
    INT4_PER_TOKEN_HEAD = enum.auto()  # vLLM's INT4 kernel is in another module, which is not taken
    NVFP4 = enum.auto()

    @property
    def is_per_token_head(self) -> bool:
        return self.name.endswith("_PER_TOKEN_HEAD")
