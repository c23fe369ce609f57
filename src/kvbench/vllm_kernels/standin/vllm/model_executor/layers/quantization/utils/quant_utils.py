"""kvbench's stand-in for vllm.model_executor.layers.quantization.utils.quant_utils (not vLLM's code): the fp8
format of the platform and its range."""

import torch

from vllm.platforms import current_platform

FP8_DTYPE = current_platform.fp8_dtype()


def get_fp8_min_max() -> tuple[float, float]:
    """The smallest and largest finite values of FP8_DTYPE."""
    info = torch.finfo(FP8_DTYPE)
    return float(info.min), float(info.max)
