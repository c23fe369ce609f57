"""kvbench's Triton kernel for the per-token-head quantized KV write (kvbench.ops.token_head_quant).

One program writes HEADS heads of one token, key and value: per head the scale max(amax / QMAX, 1e-6) and the row
times its reciprocal, both with IEEE division (so the result is bit-exact with the reference; vLLM's own Triton
op divides approximately), int8 rounded half away from zero or e4m3 rounded to nearest, and the float32 scale.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kvbench.impls.kernels.mla import _sm_count

QMAX = {"int8": 127.0, "fp8": 448.0}


@triton.jit
def _quantize_rows(x, QMAX: tl.constexpr, INT8: tl.constexpr):
    """(codes, scales) of rows x [HEADS, HEAD_BLOCK] (float32)."""
    amax = tl.max(tl.abs(x), axis=1)
    scale = tl.maximum(tl.math.div_rn(amax, tl.zeros_like(amax) + QMAX), 1e-6)
    q = x * tl.math.div_rn(tl.zeros_like(scale) + 1.0, scale)[:, None]
    if INT8:
        q = tl.clamp(tl.where(q >= 0, q + 0.5, q - 0.5), -128.0, 127.0).to(tl.int8)
    else:
        q = tl.clamp(q, -QMAX, QMAX).to(tl.float8e4nv)
    return q.to(tl.uint8, bitcast=True), scale


@triton.jit
def _write_rows(x_ptr, c_ptr, s_ptr, src, dst, scale_dst, mask, head_ok, QMAX: tl.constexpr, INT8: tl.constexpr):
    x = tl.load(x_ptr + src, mask=mask, other=0.0).to(tl.float32)
    q, scale = _quantize_rows(x, QMAX, INT8)
    tl.store(c_ptr + dst, q, mask=mask)
    tl.store(s_ptr + scale_dst, scale, mask=head_ok)


@triton.jit
def _token_head_kernel(key_ptr, value_ptr, kc_ptr, vc_ptr, ks_ptr, vs_ptr, slot_ptr, key_st, key_sh, value_st,
                       value_sh, c_sb, c_so, c_sh, s_sb, s_so, NUM_HEADS: tl.constexpr, HEAD_SIZE: tl.constexpr,
                       HEAD_BLOCK: tl.constexpr, HEADS: tl.constexpr, BLOCK_SIZE: tl.constexpr,
                       QMAX: tl.constexpr, INT8: tl.constexpr):
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + token)
    if slot < 0:
        return
    block, offset = slot // BLOCK_SIZE, slot % BLOCK_SIZE
    h = tl.program_id(1) * HEADS + tl.arange(0, HEADS)
    d = tl.arange(0, HEAD_BLOCK)
    mask = (h < NUM_HEADS)[:, None] & (d < HEAD_SIZE)[None, :]
    dst = block * c_sb + offset * c_so + h[:, None] * c_sh + d[None, :]
    scale_dst = block * s_sb + offset * s_so + h
    head_ok = h < NUM_HEADS
    _write_rows(key_ptr, kc_ptr, ks_ptr, token * key_st + h[:, None] * key_sh + d[None, :], dst, scale_dst, mask,
                head_ok, QMAX, INT8)
    _write_rows(value_ptr, vc_ptr, vs_ptr, token * value_st + h[:, None] * value_sh + d[None, :], dst, scale_dst,
                mask, head_ok, QMAX, INT8)


def reshape_and_cache_per_token_head(key, value, key_cache, value_cache, k_scale_cache, v_scale_cache, slot_mapping,
                                     kind: str, heads: int | None = None, num_warps: int | None = None) -> None:
    """Write key/value [T, H, D] into int8/fp8 NHD caches [blocks, block_size, H, D] with float32 scales
    [blocks, block_size, H] per token and head (key and value caches share their strides, as do the scales)."""
    num_tokens = slot_mapping.shape[0]
    if num_tokens == 0:
        return
    _, num_heads, head_size = key.shape
    head_block = triton.next_power_of_2(head_size)
    device_index = key.device.index if key.is_cuda else None
    heads = heads or min(triton.next_power_of_2(num_heads), max(1, 4096 // head_block))
    while heads > 1 and num_tokens * triton.cdiv(num_heads, heads) < 4 * _sm_count(device_index):
        heads //= 2
    grid = (num_tokens, triton.cdiv(num_heads, heads))
    _token_head_kernel[grid](  # caches as bytes: the codes are stored bit for bit
        key, value, key_cache.view(torch.uint8), value_cache.view(torch.uint8), k_scale_cache, v_scale_cache, slot_mapping,
        key.stride(0), key.stride(1), value.stride(0), value.stride(1),
        key_cache.stride(0), key_cache.stride(1), key_cache.stride(2), k_scale_cache.stride(0),
        k_scale_cache.stride(1), NUM_HEADS=num_heads, HEAD_SIZE=head_size, HEAD_BLOCK=head_block, HEADS=heads,
        BLOCK_SIZE=key_cache.shape[1], QMAX=QMAX[kind], INT8=kind == "int8",
        num_warps=num_warps or max(1, min(8, heads * head_block // 1024)),
        enable_fp_fusion=False)  # x * (1 / s) + 0.5 rounded twice, as the reference (an FMA would round once)
