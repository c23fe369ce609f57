"""kvbench's Triton kernel for the DeepSeek V3.2 indexer-key write (kvbench.ops.indexer).

One program writes TOKENS tokens, all head_dim / 128 groups of each: amax per group, the scale max(amax, 1e-4) / 448
(IEEE division), made the next power of two up from its float32 bits for ue8m0 / mxfp8, the e4m3 codes of x / s,
and the scale's 4 bytes (float32, or four copies of the exponent byte for mxfp8), at their places in the
block-major cache (codes at o * head_dim, scales after the block's codes).
"""

from __future__ import annotations

import triton
import triton.language as tl

from kvbench.impls.kernels.mla import _sm_count, tokens_per_program

FORMAT_CODES = {"fp32": 0, "ue8m0": 1, "mxfp8": 2}


@triton.jit
def _indexer_kernel(k_ptr, cache_ptr, slot_ptr, num_tokens, k_st, c_sb, HEAD_DIM: tl.constexpr,
                    GROUPS: tl.constexpr, BLOCK_SIZE: tl.constexpr, TOKENS: tl.constexpr, FORMAT: tl.constexpr):
    tokens = tl.program_id(0).to(tl.int64) * TOKENS + tl.arange(0, TOKENS)
    slots = tl.load(slot_ptr + tokens, mask=tokens < num_tokens, other=-1)
    ok = slots >= 0
    block, offset = slots // BLOCK_SIZE, slots % BLOCK_SIZE
    g, i = tl.arange(0, GROUPS), tl.arange(0, 128)
    dims = g[None, :, None] * 128 + i[None, None, :]
    x = tl.load(k_ptr + tokens[:, None, None] * k_st + dims, mask=ok[:, None, None]).to(tl.float32)
    amax = tl.maximum(tl.max(tl.abs(x), axis=2), 1e-4)  # [TOKENS, GROUPS]
    scale = tl.math.div_rn(amax, tl.zeros_like(amax) + 448.0)
    bits = scale.to(tl.int32, bitcast=True)
    if FORMAT != 0:  # the next power of two up: the exponent, plus one unless the mantissa is 0
        bits = ((((bits >> 23) & 0xFF) + ((bits & 0x7FFFFF) != 0).to(tl.int32)) << 23)
        scale = bits.to(tl.float32, bitcast=True)
    codes = tl.clamp(tl.math.div_rn(x, scale[:, :, None]), -448.0, 448.0).to(tl.float8e4nv)
    base = block * c_sb
    tl.store(cache_ptr + (base + offset * HEAD_DIM)[:, None, None] + dims, codes.to(tl.uint8, bitcast=True),
             mask=ok[:, None, None])
    stored = bits if FORMAT != 2 else ((bits >> 23) & 0xFF) * 0x01010101
    where = (base + BLOCK_SIZE * HEAD_DIM + offset * GROUPS * 4)[:, None] + g[None, :] * 4
    tl.store((cache_ptr + where).to(tl.pointer_type(tl.int32)), stored, mask=ok[:, None])


def indexer_k_quant_and_cache(k, kv_cache, slot_mapping, scale_fmt: str, tokens: int | None = None,
                              num_warps: int | None = None) -> None:
    """Quantize k [T, head_dim] into the uint8 indexer cache [blocks, block_size, head_dim + head_dim / 32]."""
    num_tokens = slot_mapping.shape[0]
    if num_tokens == 0:
        return
    if k.stride(1) != 1:
        raise ValueError("k must be contiguous along head_dim")
    head_dim = k.shape[1]
    device_index = k.device.index if k.is_cuda else None
    tokens = tokens or tokens_per_program(num_tokens, _sm_count(device_index))
    _indexer_kernel[(triton.cdiv(num_tokens, tokens),)](
        k, kv_cache, slot_mapping, num_tokens, k.stride(0), kv_cache.stride(0), HEAD_DIM=head_dim,
        GROUPS=head_dim // 128, BLOCK_SIZE=kv_cache.shape[1], TOKENS=tokens, FORMAT=FORMAT_CODES[scale_fmt],
        num_warps=num_warps or 4)
