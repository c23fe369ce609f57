"""kvbench's Triton kernel for the MLA latent-cache write (kvbench.ops.mla): auto, fp8 and fp8_ds_mla rows.

One program writes TOKENS tokens: their kv_c rows as one [TOKENS, RANK_BLOCK] tile and their k_pe rows as one
[TOKENS, PE_BLOCK] tile (powers of two, masked), stored straight into the cache rows. A row is only 1.1 KB, so
several tokens per program keep enough bytes in flight per SM; TOKENS shrinks for small token counts so that the
grid still covers the chip. fp8 rows divide by the scale with IEEE division (as vLLM and the reference do; by
default through the reciprocal and one correction of the product clamped to the format's range,
cache_write._saturated_quotient's DIV 2, exact for scales from 2**-80 to 2**100);
fp8_ds_mla rows take each 128-value tile's power-of-two scale from the tile's amax, computed exactly from the
float32 bits of max(amax / 448, 1e-4) (the next power of two up: the exponent, plus one unless the mantissa is 0).
"""

from __future__ import annotations

import triton
import triton.language as tl

from kvbench.impls.kernels.cache_write import FP8_CODES, _fp8_values, _sm_count, saturate

# (most tokens per program, warps) by cache kind, from scripts/tune_triton.py's MLA table on an H100 (2026-12-05,
# notes/triton.md): at 65536 tokens, cold L2, auto 56.4 us (4 / 1) against 56.6 (4 / 2, the H200's choice before),
# fp8 41.8 (2 / 2, DIV 1) against 42.7 (4 / 2, DIV 0), fp8_ds_mla 47.9 (2 / 1) against 53.3 (4 / 2). The division
# is DIV 2 (the product clamped before its correction: 2 instructions an element fewer): H100, 2026-12-06, cold,
# 41.85 us against 41.92 (DIV 1) at 65536 tokens, 12.09 against 12.14 at 16384
LAUNCH = {"auto": (4, 1), "fp8": (2, 2), "fp8_ds_mla": (2, 1)}
PROGRAMS_PER_SM = 4


@triton.jit
def _quantize(x, scale, FP8: tl.constexpr, SKIP_SCALE: tl.constexpr, DIV: tl.constexpr):
    """fp8 codes (uint8) of saturate(x / scale) rounded to nearest (IEEE division, DIV 0-2 as in
    cache_write._fp8_values; none with SKIP_SCALE); FP8 1 = e4m3fn, 2 = e5m2."""
    if SKIP_SCALE:
        y = saturate(x.to(tl.float32), FP8)
    else:
        y = _fp8_values(x, scale, FP8, DIV)
    if FP8 == 1:
        return y.to(tl.float8e4nv).to(tl.uint8, bitcast=True)
    return y.to(tl.float8e5).to(tl.uint8, bitcast=True)


@triton.jit
def _mla_kernel(kv_c_ptr, k_pe_ptr, cache_ptr, slot_ptr, scale_ptr, num_tokens, kv_c_st, k_pe_st, c_sb, c_so,
                RANK: tl.constexpr, PE: tl.constexpr, RANK_BLOCK: tl.constexpr, PE_BLOCK: tl.constexpr,
                BLOCK_SIZE: tl.constexpr, TOKENS: tl.constexpr, FP8: tl.constexpr, SKIP_SCALE: tl.constexpr,
                DIV: tl.constexpr, EVICT: tl.constexpr):
    tokens = tl.program_id(0).to(tl.int64) * TOKENS + tl.arange(0, TOKENS)
    slots = tl.load(slot_ptr + tokens, mask=tokens < num_tokens, other=-1)
    row = (slots // BLOCK_SIZE) * c_sb + (slots % BLOCK_SIZE) * c_so
    ok = (slots >= 0)[:, None]
    r, p = tl.arange(0, RANK_BLOCK)[None, :], tl.arange(0, PE_BLOCK)[None, :]
    real = (tokens < num_tokens)[:, None]  # the rows are loaded without waiting for the slots (one memory latency
    # less: a decode batch's call is a few microseconds); the slots decide only what is stored
    if FP8 != 0 and not SKIP_SCALE:
        scale = tl.load(scale_ptr)
    else:
        scale = 1.0
    kv_c = tl.load(kv_c_ptr + tokens[:, None] * kv_c_st + r, mask=real & (r < RANK), eviction_policy=EVICT)
    k_pe = tl.load(k_pe_ptr + tokens[:, None] * k_pe_st + p, mask=real & (p < PE), eviction_policy=EVICT)
    if FP8 != 0:
        kv_c = _quantize(kv_c, scale, FP8, SKIP_SCALE, DIV)
        k_pe = _quantize(k_pe, scale, FP8, SKIP_SCALE, DIV)
    tl.store(cache_ptr + row[:, None] + r, kv_c, mask=ok & (r < RANK), eviction_policy=EVICT)
    tl.store(cache_ptr + row[:, None] + RANK + p, k_pe, mask=ok & (p < PE), eviction_policy=EVICT)


@triton.jit
def _ds_mla_kernel(kv_c_ptr, k_pe_ptr, cache_ptr, slot_ptr, num_tokens, kv_c_st, k_pe_st, c_sb, c_so,
                   BLOCK_SIZE: tl.constexpr, TOKENS: tl.constexpr):
    """656-byte rows: 512 e4m3 codes (4 tiles of 128), 4 float32 tile scales, 64 raw 16-bit rope values."""
    tokens = tl.program_id(0).to(tl.int64) * TOKENS + tl.arange(0, TOKENS)
    slots = tl.load(slot_ptr + tokens, mask=tokens < num_tokens, other=-1)
    row = (slots // BLOCK_SIZE) * c_sb + (slots % BLOCK_SIZE) * c_so  # in bytes
    ok = slots >= 0
    real = tokens < num_tokens  # rows loaded without waiting for the slots, as in _mla_kernel
    t, i = tl.arange(0, 4), tl.arange(0, 128)
    x = tl.load(kv_c_ptr + tokens[:, None, None] * kv_c_st + t[None, :, None] * 128 + i[None, None, :],
                mask=real[:, None, None]).to(tl.float32)
    p = tl.arange(0, 64)
    rope = tl.load(k_pe_ptr + tokens[:, None] * k_pe_st + p[None, :], mask=real[:, None])
    amax = tl.max(tl.abs(x), axis=2)  # [TOKENS, 4]
    u = tl.maximum(tl.math.div_rn(amax, tl.zeros_like(amax) + 448.0), 1e-4)
    bits = u.to(tl.int32, bitcast=True)
    exponent = ((bits >> 23) & 0xFF) + ((bits & 0x7FFFFF) != 0).to(tl.int32)  # ceil(log2(u)), biased
    scale = (exponent << 23).to(tl.float32, bitcast=True)
    # x / scale as x * (1 / scale): the scale is a power of two from 2**-13 up, so its reciprocal is exact and the
    # product is the correctly rounded quotient (an infinite scale: 0, or NaN for an infinite x, as x / inf)
    inverse = tl.math.div_rn(tl.zeros_like(scale) + 1.0, scale)
    codes = tl.clamp(x * inverse[:, :, None], -448.0, 448.0).to(tl.float8e4nv).to(tl.uint8, bitcast=True)
    tl.store(cache_ptr + row[:, None, None] + t[None, :, None] * 128 + i[None, None, :], codes,
             mask=ok[:, None, None])
    scale_ptr = (cache_ptr + row[:, None] + 512 + t[None, :] * 4).to(tl.pointer_type(tl.float32))
    tl.store(scale_ptr, scale, mask=ok[:, None])
    rope_ptr = (cache_ptr + row[:, None] + 528 + p[None, :] * 2).to(tl.pointer_type(tl.int16))
    tl.store(rope_ptr, rope.to(tl.int16, bitcast=True), mask=ok[:, None])


def tokens_per_program(num_tokens: int, sm_count: int, most: int = LAUNCH["auto"][0]) -> int:
    """As many tokens per program as keep at least PROGRAMS_PER_SM programs per SM (a power of two, 1..most)."""
    tokens = most
    while tokens > 1 and triton.cdiv(num_tokens, tokens) < PROGRAMS_PER_SM * sm_count:
        tokens //= 2
    return tokens


def concat_and_cache_mla(kv_c, k_pe, kv_cache, slot_mapping, kv_cache_dtype: str, scale, skip_scale: bool = False,
                         tokens: int | None = None, num_warps: int | None = None, div: int = 2,
                         evict: str = "") -> None:
    """Write kv_c [T, R] and k_pe [T, P] rows into kv_cache [blocks, block_size, entry] (see kvbench.ops.mla);
    `tokens`, `num_warps`, `div` and `evict` override the launch heuristic (scripts/tune_triton.py)."""
    from kvbench.ops.mla import KV_CACHE_DTYPES

    num_tokens = slot_mapping.shape[0]
    if num_tokens == 0:
        return
    if kv_c.stride(1) != 1 or k_pe.stride(1) != 1:
        raise ValueError("kv_c and k_pe must be contiguous along their last dim")
    if min(kv_c.shape[0], k_pe.shape[0]) < num_tokens:  # every row is read, padding tokens' too
        raise ValueError(f"kv_c and k_pe need a row for each of the {num_tokens} slots; they have "
                         f"{kv_c.shape[0]} and {k_pe.shape[0]}")
    device_index = kv_c.device.index if kv_c.is_cuda else None
    kind = "fp8_ds_mla" if kv_cache_dtype == "fp8_ds_mla" else "fp8" if KV_CACHE_DTYPES[kv_cache_dtype] else "auto"
    most, warps = LAUNCH[kind]
    tokens = tokens or tokens_per_program(num_tokens, _sm_count(device_index), most)
    num_warps = num_warps or warps
    grid = (triton.cdiv(num_tokens, tokens),)
    common = (kv_c.stride(0), k_pe.stride(0), kv_cache.stride(0), kv_cache.stride(1))
    if kv_cache_dtype == "fp8_ds_mla":
        _ds_mla_kernel[grid](kv_c, k_pe, kv_cache, slot_mapping, num_tokens, *common,
                             BLOCK_SIZE=kv_cache.shape[1], TOKENS=tokens, num_warps=num_warps)
        return
    rank, pe = kv_c.shape[1], k_pe.shape[1]
    _mla_kernel[grid](kv_c, k_pe, kv_cache, slot_mapping, scale, num_tokens, *common, RANK=rank, PE=pe,
                      RANK_BLOCK=triton.next_power_of_2(rank), PE_BLOCK=triton.next_power_of_2(pe),
                      BLOCK_SIZE=kv_cache.shape[1], TOKENS=tokens, FP8=FP8_CODES[KV_CACHE_DTYPES[kv_cache_dtype]],
                      SKIP_SCALE=skip_scale, DIV=min(div, 2), EVICT=evict, num_warps=num_warps)  # (DIV 3 leaves
    # the saturation to a store of float32 into fp8; this kernel converts to codes itself: 2)
