"""kvbench's stand-in for vllm.utils.torch_utils (not vLLM's code): what vLLM's Triton write op imports from it."""

QUANTIZED_PREFIXES = ("fp8", "int8", "int4", "nvfp4")


def is_quantized_kv_cache(kv_cache_dtype: str) -> bool:
    """Whether the cache stores quantized values (fp8 and the per-token-head formats) rather than the input's."""
    return kv_cache_dtype.startswith(QUANTIZED_PREFIXES) or kv_cache_dtype.endswith("per_token_head")
