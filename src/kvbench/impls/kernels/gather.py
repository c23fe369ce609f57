"""kvbench's Triton kernel for the cache gathers (kvbench.ops.gather, kvbench.ops.cp_gather): the rows of a batch of
sequences read out of a paged cache into a dense destination, copied or dequantized from fp8.

One program gathers TOKENS consecutive destination rows. Each row finds its sequence (token_to_seq where the op has
it, else a binary search of cu_seq_lens: STEPS halvings of the sequence range), its position (row - cu_seq_lens[b]
+ seq_starts[b]), its block from the block table and its slot, then copies the row in CHUNK-wide pieces (all issued
before any is stored: the rows are independent). fp8 rows are dequantized: the code's float32 value times the scale,
rounded to the destination dtype (as vLLM).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kvbench.impls.kernels.mla import _sm_count, tokens_per_program

FP8_CODES = {None: 0, "e4m3": 1, "e5m2": 2}
MAX_TOKENS_PER_PROGRAM = 8


@triton.jit
def _sequence_of(t, cu_ptr, num_seqs, STEPS: tl.constexpr):
    """The b with cu[b] <= t < cu[b + 1] for each t (cu ascending, num_seqs + 1 entries): a binary search."""
    lo = tl.zeros_like(t).to(tl.int32)
    hi = lo + num_seqs - 1
    for _ in tl.static_range(STEPS):
        mid = (lo + hi) // 2
        right = tl.load(cu_ptr + mid + 1) <= t
        lo = tl.where(right & (lo < hi), mid + 1, lo)
        hi = tl.where(right | (lo >= hi), hi, mid)
    return lo


@triton.jit
def _gather_kernel(src_ptr, dst_ptr, table_ptr, cu_ptr, starts_ptr, t2s_ptr, scale_ptr, num_tokens, num_seqs,
                   table_st, c_sb, c_so, d_st, BLOCK_SIZE: tl.constexpr, ENTRY: tl.constexpr, CHUNK: tl.constexpr,
                   TOKENS: tl.constexpr, STEPS: tl.constexpr, HAS_T2S: tl.constexpr, HAS_STARTS: tl.constexpr,
                   FP8: tl.constexpr):
    t = tl.program_id(0) * TOKENS + tl.arange(0, TOKENS)
    ok = t < num_tokens
    t = tl.where(ok, t, 0)
    if HAS_T2S:
        b = tl.load(t2s_ptr + t)
    else:
        b = _sequence_of(t, cu_ptr, num_seqs, STEPS)
    position = t - tl.load(cu_ptr + b)
    if HAS_STARTS:
        position += tl.load(starts_ptr + b)
    block = tl.load(table_ptr + b.to(tl.int64) * table_st + position // BLOCK_SIZE).to(tl.int64)
    src_row = block * c_sb + (position % BLOCK_SIZE).to(tl.int64) * c_so
    dst_row = t.to(tl.int64) * d_st
    e = tl.arange(0, CHUNK)
    if FP8 != 0:
        scale = tl.load(scale_ptr)
    for start in tl.static_range(0, ENTRY, CHUNK):
        mask = ok[:, None] & (start + e < ENTRY)[None, :]
        x = tl.load(src_ptr + src_row[:, None] + start + e[None, :], mask=mask)
        if FP8 == 1:
            x = (x.to(tl.float8e4nv, bitcast=True).to(tl.float32) * scale).to(dst_ptr.dtype.element_ty)
        elif FP8 == 2:
            x = (x.to(tl.float8e5, bitcast=True).to(tl.float32) * scale).to(dst_ptr.dtype.element_ty)
        tl.store(dst_ptr + dst_row[:, None] + start + e[None, :], x, mask=mask)


def chunk_of(entry: int) -> int:
    """The piece a row is copied in: the whole row rounded up to a power of two (masked), at most 1024 elements.
    On an H100 at 65536 tokens (tune gathers tables, 2026-12-05), DeepSeek's 576-element rows, 8 rows and 4 warps a
    program: pieces of 64 (the largest power of two dividing 576, the earlier rule) 60.6 us bf16 / 57.0 fp8, of 256
    57.0 / 45.4, of 512 56.3 / 44.1, one of 1024 55.2 / 42.4 (92 and 90 % of the copy rate)."""
    return min(1024, triton.next_power_of_2(entry))


def gather_rows(src_cache: torch.Tensor, dst: torch.Tensor, block_table: torch.Tensor, cu_seq_lens: torch.Tensor,
                num_tokens: int, seq_starts: torch.Tensor | None = None, token_to_seq: torch.Tensor | None = None,
                fp8: str | None = None, scale: torch.Tensor | None = None, tokens: int | None = None,
                num_warps: int = 4, chunk: int | None = None) -> None:
    """dst[t] = the row of sequence b's token t - cu_seq_lens[b] (+ seq_starts[b]) for t < num_tokens, from
    src_cache [blocks, block_size, *entry] (contiguous rows) into dst [>= num_tokens, *entry]. `tokens`,
    `num_warps` and `chunk` override the launch heuristic (scripts/tune_triton.py)."""
    if num_tokens == 0:
        return
    entry = src_cache[0, 0].numel()
    if src_cache.stride(-1) != 1 or dst.stride(-1) != 1 or dst[0].numel() != entry:
        raise ValueError("the cache's and dst's rows must be contiguous and of the same size")
    num_seqs = cu_seq_lens.shape[0] - 1
    device_index = src_cache.device.index if src_cache.is_cuda else None
    tokens = tokens or tokens_per_program(num_tokens, _sm_count(device_index), MAX_TOKENS_PER_PROGRAM)
    steps = max(1, (num_seqs - 1).bit_length())
    _gather_kernel[(triton.cdiv(num_tokens, tokens),)](
        src_cache, dst, block_table, cu_seq_lens, seq_starts if seq_starts is not None else cu_seq_lens,
        token_to_seq if token_to_seq is not None else cu_seq_lens, scale if scale is not None else cu_seq_lens,
        num_tokens, num_seqs, block_table.stride(0), src_cache.stride(0), src_cache.stride(1), dst.stride(0),
        BLOCK_SIZE=src_cache.shape[1], ENTRY=entry, CHUNK=chunk or chunk_of(entry), TOKENS=tokens, STEPS=steps,
        HAS_T2S=token_to_seq is not None, HAS_STARTS=seq_starts is not None, FP8=FP8_CODES[fp8],
        num_warps=num_warps)
