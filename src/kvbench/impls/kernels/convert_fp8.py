"""kvbench's Triton kernel for convert_fp8 (kvbench.ops.convert_fp8): a contiguous cache converted element by
element between fp8 codes and 16/32-bit values.

One program converts BLOCK consecutive elements (the cache is contiguous, so loads and stores are wide): dequantize
= the code's value as float32 times the scale, rounded to the destination dtype; quantize = IEEE division by the
scale, saturated to the format's largest value, rounded to nearest. Both match vLLM's conversions bit for bit.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kvbench.impls.kernels.cache_write import FP8_CODES, saturate

BLOCK = 4096


@triton.jit
def _dequantize_kernel(src_ptr, dst_ptr, scale, n, FP8: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    codes = tl.load(src_ptr + i, mask=mask)
    if FP8 == 1:
        x = codes.to(tl.float8e4nv, bitcast=True).to(tl.float32)
    else:
        x = codes.to(tl.float8e5, bitcast=True).to(tl.float32)
    tl.store(dst_ptr + i, (x * scale).to(dst_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _quantize_kernel(src_ptr, dst_ptr, scale, n, FP8: tl.constexpr, BLOCK: tl.constexpr):
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < n
    x = tl.load(src_ptr + i, mask=mask).to(tl.float32)
    y = tl.math.div_rn(x, tl.zeros_like(x) + scale)
    y = saturate(y, FP8)
    if FP8 == 1:
        codes = y.to(tl.float8e4nv).to(tl.uint8, bitcast=True)
    else:
        codes = y.to(tl.float8e5).to(tl.uint8, bitcast=True)
    tl.store(dst_ptr + i, codes, mask=mask)


def convert_fp8(dst: torch.Tensor, src: torch.Tensor, scale: float, fmt: str, block: int = BLOCK,
                num_warps: int = 8) -> None:
    """dst = src converted (uint8 src: dequantize into dst's dtype; uint8 dst: quantize); both contiguous."""
    if not (src.is_contiguous() and dst.is_contiguous()) or src.numel() != dst.numel():
        raise ValueError("src and dst must be contiguous tensors of the same number of elements")
    n = src.numel()
    if n == 0:
        return
    kernel = _dequantize_kernel if src.dtype == torch.uint8 else _quantize_kernel
    kernel[(triton.cdiv(n, block),)](src, dst, scale, n, FP8=FP8_CODES[fmt], BLOCK=block, num_warps=num_warps)
