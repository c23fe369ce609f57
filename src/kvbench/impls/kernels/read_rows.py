"""kvbench's Triton kernels for the gathers of DeepSeek-V3.2's quantized caches: the indexer keys
(kvbench.ops.indexer_gather: codes and scales copied out of the block-major cache) and the fp8_ds_mla rows
upconverted to bf16 (kvbench.ops.upconvert_gather).

One program handles TOKENS consecutive destination rows: each finds its sequence by a binary search of the
cumulative lengths (kvbench.impls.kernels.gather), its block and slot, and copies or converts the row. Rows of a
sequence are consecutive slots of a block, so a program's loads of codes (and of the block's scales, which lie
together after the codes) are contiguous runs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kvbench.impls.kernels.gather import _sequence_of
from kvbench.impls.kernels.mla import _sm_count, tokens_per_program


@triton.jit
def _slot_of(t, table_ptr, cu_ptr, starts_ptr, num_seqs, table_st, BLOCK_SIZE: tl.constexpr, STEPS: tl.constexpr,
             HAS_STARTS: tl.constexpr):
    b = _sequence_of(t, cu_ptr, num_seqs, STEPS)
    position = t - tl.load(cu_ptr + b)
    if HAS_STARTS:
        position += tl.load(starts_ptr + b)
    block = tl.load(table_ptr + b.to(tl.int64) * table_st + position // BLOCK_SIZE).to(tl.int64)
    return block, (position % BLOCK_SIZE).to(tl.int64)


@triton.jit
def _indexer_gather_kernel(cache_ptr, k_ptr, scale_ptr, table_ptr, cu_ptr, num_tokens, num_seqs, table_st, c_sb,
                           BLOCK_SIZE: tl.constexpr, HEAD_DIM: tl.constexpr, GROUPS: tl.constexpr,
                           TOKENS: tl.constexpr, STEPS: tl.constexpr):
    t = tl.program_id(0) * TOKENS + tl.arange(0, TOKENS)
    ok = t < num_tokens
    t = tl.where(ok, t, 0)
    block, offset = _slot_of(t, table_ptr, cu_ptr, cu_ptr, num_seqs, table_st, BLOCK_SIZE, STEPS, False)
    base = block * c_sb
    d = tl.arange(0, HEAD_DIM)
    codes = tl.load(cache_ptr + (base + offset * HEAD_DIM)[:, None] + d[None, :], mask=ok[:, None])
    tl.store(k_ptr + t.to(tl.int64)[:, None] * HEAD_DIM + d[None, :], codes, mask=ok[:, None])
    g = tl.arange(0, GROUPS)
    scale_at = (cache_ptr + (base + BLOCK_SIZE * HEAD_DIM + offset * GROUPS * 4)[:, None] + g[None, :] * 4)
    scales = tl.load(scale_at.to(tl.pointer_type(tl.int32)), mask=ok[:, None])
    out = (scale_ptr + t.to(tl.int64)[:, None] * GROUPS * 4 + g[None, :] * 4).to(tl.pointer_type(tl.int32))
    tl.store(out, scales, mask=ok[:, None])


def indexer_gather(kv_cache: torch.Tensor, dst_k: torch.Tensor, dst_scale: torch.Tensor, block_table: torch.Tensor,
                   cu_seq_lens: torch.Tensor, tokens: int | None = None, num_warps: int = 4) -> None:
    """dst_k [T, head_dim] / dst_scale [T, head_dim / 128 * 4] (uint8, contiguous) from the block-major cache."""
    num_tokens, head_dim = dst_k.shape
    if num_tokens == 0:
        return
    num_seqs = cu_seq_lens.shape[0] - 1
    device_index = kv_cache.device.index if kv_cache.is_cuda else None
    tokens = tokens or tokens_per_program(num_tokens, _sm_count(device_index), 32)
    _indexer_gather_kernel[(triton.cdiv(num_tokens, tokens),)](
        kv_cache, dst_k, dst_scale, block_table, cu_seq_lens, num_tokens, num_seqs, block_table.stride(0),
        kv_cache.stride(0), BLOCK_SIZE=kv_cache.shape[1], HEAD_DIM=head_dim, GROUPS=head_dim // 128, TOKENS=tokens,
        STEPS=max(1, (num_seqs - 1).bit_length()), num_warps=num_warps)


@triton.jit
def _upconvert_kernel(cache_ptr, dst_ptr, table_ptr, cu_ptr, starts_ptr, num_tokens, num_seqs, table_st, c_sb,
                      c_so, d_st, BLOCK_SIZE: tl.constexpr, TOKENS: tl.constexpr, STEPS: tl.constexpr,
                      HAS_STARTS: tl.constexpr):
    t = tl.program_id(0) * TOKENS + tl.arange(0, TOKENS)
    ok = t < num_tokens
    t = tl.where(ok, t, 0)
    block, offset = _slot_of(t, table_ptr, cu_ptr, starts_ptr, num_seqs, table_st, BLOCK_SIZE, STEPS, HAS_STARTS)
    row = block * c_sb + offset * c_so  # bytes
    dst_row = t.to(tl.int64) * d_st  # elements
    k, i = tl.arange(0, 4), tl.arange(0, 128)
    m3 = ok[:, None, None]
    codes = tl.load(cache_ptr + row[:, None, None] + k[None, :, None] * 128 + i[None, None, :], mask=m3)
    scales = tl.load((cache_ptr + row[:, None] + 512 + k[None, :] * 4).to(tl.pointer_type(tl.float32)),
                     mask=ok[:, None])
    values = codes.to(tl.float8e4nv, bitcast=True).to(tl.float32) * scales[:, :, None]
    tl.store(dst_ptr + dst_row[:, None, None] + k[None, :, None] * 128 + i[None, None, :],
             values.to(tl.bfloat16), mask=m3)
    p = tl.arange(0, 64)
    rope = tl.load((cache_ptr + row[:, None] + 528 + p[None, :] * 2).to(tl.pointer_type(tl.int16)), mask=ok[:, None])
    out = (dst_ptr + dst_row[:, None] + 512 + p[None, :]).to(tl.pointer_type(tl.int16))
    tl.store(out, rope, mask=ok[:, None])


def upconvert_gather(src_cache: torch.Tensor, dst: torch.Tensor, block_table: torch.Tensor,
                     workspace_starts: torch.Tensor, num_tokens: int, seq_starts: torch.Tensor | None = None,
                     tokens: int | None = None, num_warps: int = 4) -> None:
    """dst [>= num_tokens, 576] bf16 from 656-byte fp8_ds_mla rows (kvbench.ops.upconvert_gather)."""
    if num_tokens == 0:
        return
    num_seqs = workspace_starts.shape[0] - 1
    device_index = src_cache.device.index if src_cache.is_cuda else None
    tokens = tokens or tokens_per_program(num_tokens, _sm_count(device_index), 8)  # 8: 46.6 us at 65536 tokens
    # on an H100, 4: 47.2 (tune gathers table, 2026-12-05)
    _upconvert_kernel[(triton.cdiv(num_tokens, tokens),)](
        src_cache, dst, block_table, workspace_starts, seq_starts if seq_starts is not None else workspace_starts,
        num_tokens, num_seqs, block_table.stride(0), src_cache.stride(0), src_cache.stride(1), dst.stride(0),
        BLOCK_SIZE=src_cache.shape[1], TOKENS=tokens, STEPS=max(1, (num_seqs - 1).bit_length()),
        HAS_STARTS=seq_starts is not None, num_warps=num_warps)
