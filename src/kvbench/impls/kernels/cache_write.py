"""kvbench's own Triton KV-cache write kernel, for the flash (NHD, HND), served and paged layouts.

Same contract as vLLM's ops: inputs [tokens, heads, head_size] (any token and head stride, head_size contiguous),
caches of any block, slot and head strides (head_size contiguous; the served layouts' views),
int64 slot mapping whose length is the number of tokens, negative slots skipped; caches of the input dtype, or
uint8 holding fp8 e4m3/e5m2 codes of saturate(x / scale) rounded to nearest (per-tensor scale, or per-head on the
flash layouts).

One program writes BLOCK_H heads of one token, key and value (the paged layout's own kernel: of TOKENS tokens).
Launch parameters come from a fixed heuristic on the shapes (no autotuning, so launches can be captured in a CUDA
graph):
- BLOCK_D = head_size rounded up to a power of two (masked), so rows stay contiguous for 16-byte accesses;
- BLOCK_H: as many heads as make <= 2048 elements per program (4096 for fp8 caches), halved while the grid has
  fewer than 4 programs per SM (small token counts need many small programs to spread over the chip), but not
  below a whole token or 1024 of its elements;
- num_warps: one warp per 1024 elements, 1 to 2; for fp8 caches, whose programs convert every element, one per
  256 elements, 1 to 4 (4 always slowed 512-element programs: 4 KV heads x 128 at 65536 tokens 77.8 against
  69.8 us on an H100); a small batch, whose grid stays under 4 programs per SM, takes 4 warps a program and, in
  the flash and served layouts, no eviction hint, fp8 too (decode batches; at 512 tokens 16 warps took 2.49-2.62 us
  where 4 took 1.74-2.21). Until 2026-12-06 an fp8 decode batch kept `evict_first`, with 8 warps for programs
  under 1024 elements: in the as-served table's own process (H100, thirteenth session, 64-token batches) those
  rows sat at 1.45-1.51 us in one measurement and 1.56-1.66 in the next, or stepped between the two within one;
  without the hint, 4 warps, every row held within 0.01 us of its level, 1.51-1.58 us against vLLM's Triton op's
  1.50-1.59 (1 x 128 1.51, 4 x 128 1.53, 8 x 64 1.53-1.54, 8 x 128 1.57-1.58; with 8 warps and no hint
  1.54-1.56): notes/triton.md;
- fp8: x / scale by the reciprocal and one fused multiply-add correction, the product clamped to the format's
  range first (DIV 3, _saturated_quotient: the fp8 codes correctly rounded for scales from 2**-80 to 2**100, as
  divide_rn's DIV 1, in 4 instructions an element instead of 7; H100, 2026-12-06, served layout: 8 x 128 at 2048
  tokens 3.28 against 3.82 us, 4 x 128 2.53 against 2.78, 128 x 128 at 64 tokens 2.50 against 2.64, 65536 tokens
  alike), streamed with evict_first but in a small batch (above);
- paged layout: 32 tokens of one head a program, 4 warps, where that leaves at least 4 programs per SM
  (_paged_tokens_kernel), the value tile stored transposed, except in a program whose tokens follow each other
  in their blocks (a prefill chunk's), which stores it as loaded: there, in Triton 3.6's code, a warp's lanes run
  along the tokens and a store instruction fills whole sectors (PAGED_VALUE_AS_LOADED); calls of 2**26
  elements or more take their tokens in slot order (a small kernel's block-number keys, sorted stably: _slot_order,
  captured with the kernel),
  so that random slots of one block meet in a program too, unless at least half the slots follow each other (a
  prefill batch: token order, decided on the GPU), their grid the same tokens' heads first
  (PAGED_SORTED_HEADS_FASTEST, PAGED_RUNS_KEPT); every call of several tokens a program without an eviction hint,
  fp8 too. H100, 2026-12-05, against one token a program:
  128 x 128 at 16384 random slots bf16 7279 against 8382 us, fp8 3524 against 4341; prefill chunks fp8 1444
  against 1762, 8 x 128 fp8 87 against 117; 1024 random slots and 8 x 128 random within 2 %. Otherwise one token
  a program, the value tile stored transposed (VALUE_T), a thread's neighbouring stores one head's consecutive
  dims (H100, 2026-12-05, 128 x 128 at 16384 random slots: bf16 8480 against 12714 us, fp8 4488 against 14721);
  either kernel stores the key's x-chunks as 16-byte vectors (they were 2-byte stores, at the same speed);
- a program loads its rows and both fp8 scales without waiting for its slot (LOAD_FIRST), which only decides
  whether and where they are stored: the loads share one memory latency, which matters where a call takes a few
  microseconds (H100, 2026-12-06, fp8 decode batches of 64 tokens in the served layout, with the `evict_first`
  hint they then had, loads first against slot first: 8 x 128 1.47 against 1.58 us, 4 x 128 1.47 against 1.57;
  without the hint, thirteenth session, within 0.03 us either way). An fp8 write to a flash or served layout in a
  grid of 4 programs per SM or more awaits the slot first instead: the same call, 128 x 128, slot first against
  loads first: 64-token decode batch 2.45 against 2.54 us (vLLM's Triton op 2.36), 512 tokens 17.19 against
  17.48, 16384 546 against 551, 65536 2174 against 2197; the exception, 256 random slots, 5.48 against 5.01
  (vLLM's op 6.13). A bf16 write gains nothing from it (equal from 1024 tokens; 2.78 against 2.66 at 64).
  (Before 2026-12-05 the value's scale was loaded only after the key's division, one latency more: the SASS for
  sm_90 showed it.)
Chosen from scripts/tune_triton.py (notes/triton.md): on an H200, auto 2158 us at 65536 tokens (0.97 of the copy
rate) against 2182 with the earlier 16384 elements / 8 warps, fp8 1786 us with evict_first against 1868; on an
H100 (2026-12-05), fp8 decode batches in the served layout: 4 warps and DIV 1 took 128 x 128 at 64 tokens from
4.35 to 2.71 us and 8 x 128 at 512 tokens from 3.08 to 2.16 us.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from kvbench.ops.layouts import NHD_SHAPED

FP8_CODES = {None: 0, "e4m3": 1, "e5m2": 2}
FP8_DTYPES = {"e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
MAX_ELEMENTS_PER_PROGRAM = {False: 2048, True: 4096}  # by "is the cache fp8"
MAX_WARPS = {False: 2, True: 4}
ELEMENTS_PER_WARP = {False: 1024, True: 256}  # fp8 programs convert every element: more warps per element
PROGRAMS_PER_SM = 4
MIN_ELEMENTS_PER_PROGRAM = 1024  # halving BLOCK_H stops at a whole token, or at this many of its elements
SMALL_BATCH_WARPS = 4  # warps of a program in a grid that stays under PROGRAMS_PER_SM programs per SM
DIVISION = 3  # the fp8 quotient: divide_rn's DIV 1, or _saturated_quotient's DIV 2 / 3 (see _fp8_values)
EVICTION_POLICY = {False: "", True: "evict_first"}  # by "is the cache fp8" (notes/triton.md)
PAGED_TOKENS, PAGED_HEADS, PAGED_WARPS = 32, 1, 4  # the paged layout's programs: tokens, heads, warps
PAGED_VALUE_AS_LOADED = 2  # the value tile stored as loaded where a program's tokens follow each other, else
# transposed (_paged_tokens_kernel). H100, Triton 3.6, 2026-12-06, one call, against the transposed store always:
# 128 x 128 prefill chunks of 16384 tokens bf16 1196 against 3408 us, fp8 967 against 1675; 8 x 128 bf16 63.5
# against 215.7, fp8 48.4 against 103.4; random slots alike (7311 against 7283). Storing as loaded always is 14 %
# faster at fp8 prefill (828; there the by-slots program loads the tile for the transposed store and converts it:
# 66 loads a thread against 16 in the sm_90 code of Triton 3.6) and twice as slow with random slots (14560)
PAGED_SORTED_HEADS_FASTEST = True  # calls in slot order: a grid of the same tokens' heads next (HEADS_FASTEST),
# whose programs in flight write neighbouring 4 KiB pieces of a few blocks rather than one head's pieces a block
# (512 KiB) apart. H100, Triton 3.6, 2026-12-06 (twelfth session), 128 x 128 at 16384 tokens, with PAGED_RUNS_KEPT
# and no eviction hint, against the eleventh session's default: random slots bf16 6869 against 7376 us (1.52x the
# sector ideal, was 1.63x), fp8 3267 against 3496; prefill chunks bf16 1142 against 1189, fp8 892 against 962
PAGED_RUNS_KEPT = True  # calls in slot order keep token order where at least half the slots follow their token's
# predecessor's (prefill chunks, which the argsort would reorder by block number: with HEADS_FASTEST 1151 against
# 1318 us bf16, 927 against 983 fp8, the same call; token order itself without the order's indirect load was faster
# still, 988 and 778, but slower with random slots, 8290 and 4308, and the choice cannot be made on the host). Since
# the fourteenth session the order and its count come from one small kernel and a sort of narrow keys (_slot_order),
# the order loaded beside the count: H100, three rounds, against the torch ops' order, 128 x 128 at 16384 tokens,
# random slots bf16 6795-6801 against 6870-6880 us (1.51x the sector ideal), fp8 3205 against 3267-3271; prefill
# bf16 1093-1097 against 1139-1144, fp8 837-844 against 888-892
SORT_MIN_ELEMENTS = 1 << 26  # paged calls of this many elements a cache or more take their tokens in slot order
# (4096 tokens of 128 x 128). Below, on an H100 (2**24 elements, with _slot_order): slot order won at 8 x 128 with
# 16384 random slots (bf16 460 against 519 us) and lost with its prefill chunks (104 against 64: the order's fixed
# ~40 us), lost at 128 x 128 with 1024 random slots (fp8 284 against 275, bf16 level); the boundary was not timed


@triton.jit
def divide_rn(x, scale, DIV: tl.constexpr):
    """x / scale rounded to nearest (IEEE), as the reference divides. DIV 0: `div_rn` per element; DIV 1: the
    reciprocal once, then q = x * r corrected by one fused multiply-add (Markstein: with r = 1/scale correctly
    rounded, q + (x - q * scale) * r rounds to the correctly rounded quotient, barring underflow), three
    instructions per element instead of div_rn's sequence; where x * r overflows (or the scale is 0) q itself is
    kept, infinite as the quotient, and where it is zero too: the correction would turn -0 into +0 (an fp8 code
    of its own), and a quotient that small is zero in fp8 anyway; an infinite scale gives +-0 as IEEE does.
    DIV 1 gives the fp8 codes exactly for scales from 2**-80 to 2**100: below, the remainder x - q * scale can
    underflow (reviews found codes one step off at scales of 2**-88 with e5m2, 2**-95 with e4m3; around 2**-100
    the reciprocal leaves the normal range). kvbench's scales (amax / 448 of the inputs, or 1) are far inside;
    a case outside would fail its verification, never give a number."""
    if DIV == 0:
        return tl.math.div_rn(x, scale)
    r = tl.math.div_rn(tl.zeros_like(scale) + 1.0, scale)  # once per scale, not per element (not scale * 0 + 1:
    # NaN for an infinite scale)
    minus_s = tl.zeros_like(x) - scale  # the remainder as fma(q, -scale, x): Triton 3.6 computed -q for
    # fma(-q, scale, x) with an instruction of its own an element (x * -r + 0)
    q = x * r
    corrected = tl.math.fma(tl.math.fma(q, minus_s, x), tl.zeros_like(x) + r, q)
    return tl.where((tl.abs(q) == float("inf")) | (q == 0.0), q, corrected)


@triton.jit
def _load_scale(scale_ptr, heads, NUM_HEADS: tl.constexpr, PER_HEAD: tl.constexpr):
    """The per-tensor scale, or the program's heads' scales as a column (1 past the last head: a program's heads
    may run past it when BLOCK_H does not divide NUM_HEADS)."""
    if PER_HEAD:
        scale = tl.load(scale_ptr + heads, mask=heads < NUM_HEADS, other=1.0)[:, None]
    else:  # (one return: Triton 3.6 refuses returns of two shapes, even under a constexpr condition)
        scale = tl.load(scale_ptr)
    return scale


@triton.jit
def saturate(y, FP8: tl.constexpr):
    """float32 y clamped to the fp8 format's finite range, FP8 1 = e4m3fn, 2 = e5m2. NaN stays NaN, as through the
    reference's clamp: without propagate_nan the clamp (FMNMX, which returns the number of a NaN and a number) made
    it +-max; FMNMX.NAN costs nothing more."""
    if FP8 == 1:
        return tl.clamp(y, -448.0, 448.0, propagate_nan=tl.PropagateNan.ALL)
    return tl.clamp(y, -57344.0, 57344.0, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _saturated_quotient(x, scale, FP8: tl.constexpr, DIV: tl.constexpr):
    """saturate(x / scale) as divide_rn's DIV 1 gives it, in two fewer instructions an element (DIV 2): the product
    is clamped to the format's range before the correction, so it is never infinite and needs no select (a clamped
    product corrects to the rounded quotient or to a value past the range, saturated after), and the correction is
    written q + (q * scale - x) * -r, whose sums keep a zero's sign (+0 + -0 is +0: q + (x - q * scale) * r made
    -0 +0). Exact where DIV 1 is (scales from 2**-80 to 2**100); an infinite scale, for which DIV 1 gives +-0,
    gives NaN here. DIV 3 leaves the last saturation to the store: on a GPU the conversion to fp8 saturates
    (F2FP.SATFINITE on sm_90, e4m3 and e5m2 alike); Triton's interpreter's does not, so there the launcher gives
    DIV 2 for 3."""
    r = tl.math.div_rn(tl.zeros_like(scale) + 1.0, scale)
    q = saturate(x * r, FP8)
    # (x * -1.0: a negation, which the compiler folds into the fused multiply-add; 0 - x, Triton's -x, it cannot)
    y = tl.math.fma(tl.math.fma(q, scale, x * -1.0), r * -1.0, q)
    if DIV == 2:
        y = saturate(y, FP8)
    return y


@triton.jit
def _fp8_values(x, scale, FP8: tl.constexpr, DIV: tl.constexpr):
    """saturate(x / scale) in float32: stored into the fp8 view of the cache, which rounds it to nearest.
    (Converting here and storing the codes as uint8 took 56 more instructions a thread of a 128 x 128 decode
    program in the sm_90 code of Triton 3.6: the bytes were unpacked and packed again.)"""
    if DIV >= 2:
        return _saturated_quotient(x.to(tl.float32), scale, FP8, DIV)
    return saturate(divide_rn(x.to(tl.float32), scale, DIV), FP8)


@triton.jit
def _paged_key_offsets(block, offset, h, d, kc_sb, kc_sh, kc_sx, X: tl.constexpr):
    """Element offsets in the paged key cache [blocks, heads, head_size // X, block_size, X]: 16-byte chunks
    block_size * 16 bytes apart. The slot stride is the constant X (the caller checks it): a stride Triton can see
    makes the chunks 16-byte vector stores; with the run-time stride (before 2026-12-05) the sm_90 code stored them
    in 2-byte pieces, at the same speed on an H100."""
    return block * kc_sb + h * kc_sh + (d // X) * kc_sx + offset * X + d % X


@triton.jit
def _write_kernel(
    key_ptr, value_ptr, key_cache_ptr, value_cache_ptr, slot_ptr, k_scale_ptr, v_scale_ptr,
    key_st, key_sh, value_st, value_sh,  # input strides: token, head (head_size stride is 1)
    kc_sb, kc_so, kc_sh, kc_sx,  # key cache strides: block, offset in block, head, x-chunk (paged only)
    vc_sb, vc_so, vc_sh, vc_sd,  # value cache strides: block, offset in block, head, head_size element
    NUM_HEADS: tl.constexpr, HEAD_SIZE: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
    PAGED: tl.constexpr, X: tl.constexpr, FP8: tl.constexpr, PER_HEAD: tl.constexpr, EVICT: tl.constexpr,
    DIV: tl.constexpr, VALUE_T: tl.constexpr, LOAD_FIRST: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + token)
    if not LOAD_FIRST:
        if slot < 0:  # padding token
            return
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    dims = tl.arange(0, BLOCK_D)
    mask = (heads < NUM_HEADS)[:, None] & (dims < HEAD_SIZE)[None, :]
    h, d = heads[:, None], dims[None, :]

    if FP8 != 0:  # both scales asked for with the rows: v's would otherwise wait for k's division (one memory
        # latency more, a fifth of a decode batch's call on an H100)
        k_scale = _load_scale(k_scale_ptr, heads, NUM_HEADS, PER_HEAD)
        v_scale = _load_scale(v_scale_ptr, heads, NUM_HEADS, PER_HEAD)
    k = tl.load(key_ptr + token * key_st + h * key_sh + d, mask=mask, eviction_policy=EVICT)
    v = tl.load(value_ptr + token * value_st + h * value_sh + d, mask=mask, eviction_policy=EVICT)
    if FP8 != 0:
        k = _fp8_values(k, k_scale, FP8, DIV)
        v = _fp8_values(v, v_scale, FP8, DIV)
    if LOAD_FIRST:  # the rows were loaded without waiting for the slot; a padding token writes nothing
        if slot < 0:
            return
    block = slot // BLOCK_SIZE
    offset = slot % BLOCK_SIZE
    if PAGED:
        k_dst = _paged_key_offsets(block, offset, h, d, kc_sb, kc_sh, kc_sx, X)
    else:
        k_dst = block * kc_sb + offset * kc_so + h * kc_sh + d
    v_dst = block * vc_sb + offset * vc_so + h * vc_sh + d * vc_sd  # paged: vc_sd = block_size (transposed)
    tl.store(key_cache_ptr + k_dst, k, mask=mask, eviction_policy=EVICT)
    if VALUE_T:  # the value tile stored as [dims, heads]: the paged value's scattered stores (its default)
        tl.store(value_cache_ptr + tl.trans(v_dst), tl.trans(v), mask=tl.trans(mask), eviction_policy=EVICT)
    else:
        tl.store(value_cache_ptr + v_dst, v, mask=mask, eviction_policy=EVICT)


@triton.jit
def _follow_each_other(slot, BLOCK_SIZE: tl.constexpr, TOKENS: tl.constexpr):
    """Whether a program's TOKENS slots (-1: padding) follow each other in their blocks, as a prefill chunk's do
    (which moves on to another block at offset 0): each valid slot's offset is the first valid one's plus its
    distance from it in the program, modulo the block size. The blocks themselves are not compared."""
    valid = slot >= 0
    j = tl.arange(0, TOKENS)
    j_first = tl.min(tl.where(valid, j, TOKENS), axis=0)
    off = (slot % BLOCK_SIZE).to(tl.int32)
    off_first = tl.sum(tl.where(j == j_first, off, 0), axis=0)
    strays = tl.sum((valid & (off != (off_first + j - j_first) % BLOCK_SIZE)).to(tl.int32), axis=0)
    return strays == 0


@triton.jit
def _store_transposed(ptr, dst, v, mask, EVICT: tl.constexpr):
    """The paged value tile [tokens, heads, dims] stored as [heads, dims, tokens] (see _paged_tokens_kernel)."""
    tl.store(ptr + tl.permute(dst, (1, 2, 0)), tl.permute(v, (1, 2, 0)), mask=tl.permute(mask, (1, 2, 0)),
             eviction_policy=EVICT)


@triton.jit
def _paged_tokens_kernel(
    key_ptr, value_ptr, key_cache_ptr, value_cache_ptr, slot_ptr, k_scale_ptr, v_scale_ptr, order_ptr, runs_ptr,
    num_tokens,
    key_st, key_sh, value_st, value_sh, kc_sb, kc_so, kc_sh, kc_sx, vc_sb, vc_so, vc_sh, vc_sd,  # as _write_kernel
    NUM_HEADS: tl.constexpr, HEAD_SIZE: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr, X: tl.constexpr, FP8: tl.constexpr, EVICT: tl.constexpr,
    DIV: tl.constexpr, TOKENS: tl.constexpr, ORDERED: tl.constexpr, VALUE_AS_LOADED: tl.constexpr = 0,
    HEADS_FASTEST: tl.constexpr = False, RUNS_READ: tl.constexpr = False,
):
    """The paged write, TOKENS tokens (ORDERED: the next TOKENS of _slot_order's order, by block then token) x
    BLOCK_H heads a program.
    The value tile is stored as [heads, dims, tokens], meant tokens fastest: the tokens of one cache block
    (consecutive slots) would put their 2-byte pieces of a 32-byte sector in the same store instruction. In the sm_90
    code (Triton 3.6) a warp's lanes still run along the dims, one token a store instruction, each lane 2 bytes of
    its own sector (the pointers' axes tie, no contiguity being known, and Triton 3.6 puts the lanes on the first
    one, the heads, then the dims). Stored as loaded, [tokens, heads, dims], the lanes run along the tokens, 32
    tokens a store instruction, and the program compiles to 576 instructions a thread instead of 1400 (bf16, 32
    tokens of one head x 128, 4 warps). VALUE_AS_LOADED: 0 never, 1 always, 2 where the program's valid tokens
    follow each other in their blocks (a prefill chunk's: there the as-loaded store wrote 128 x 128 bf16 at 16384
    tokens in 1396 us against 3388, while with random slots it took 14563 against 7276; H100, Triton 3.6,
    2026-12-06; a variant that loaded the tile in each store's own layout, 2026-12-06, was 2-4 % slower at
    prefill, alike with random slots, and was dropped). The two stores write the same bytes to the same places;
    which one a program takes decides only its speed. Which axis gets the lanes is the compiler's choice, not the
    kernel's: Triton 3.9 breaks the tie the other way (the transposed store gets the lanes along the tokens, the
    as-loaded one along the dims), so these timings hold for Triton 3.6, the GPU machine's (torch 2.11's).
    HEADS_FASTEST: a one-dimensional grid whose consecutive programs take the same tokens' next heads (and so write
    neighbouring 4 KiB pieces of the same blocks) instead of the next tokens of the same head (pieces a block apart,
    2**19 bytes at 128 x 128 bf16). RUNS_READ: ORDERED programs read _slot_order's count of slots that follow
    their predecessor's or begin a block, and take token order where it is at least half of num_tokens - 1
    (else order_ptr, the tokens by block)."""
    if HEADS_FASTEST:
        head_groups: tl.constexpr = (NUM_HEADS + BLOCK_H - 1) // BLOCK_H
        token_group = tl.program_id(0) // head_groups
        head_group = tl.program_id(0) % head_groups
    else:
        token_group = tl.program_id(0)
        head_group = tl.program_id(1)
    i = token_group * TOKENS + tl.arange(0, TOKENS)
    in_range = i < num_tokens
    if ORDERED and RUNS_READ:  # token order where at least half the slots follow their predecessor's (the count);
        # the order loaded beside the count, not once it is read (one memory latency fewer, and 1800 instructions a
        # thread against 2040 in the sm_90 code of Triton 3.6, bf16 128 x 128)
        token = tl.where(tl.load(runs_ptr) * 2 < num_tokens - 1, tl.load(order_ptr + i, mask=in_range, other=0),
                         i.to(tl.int64))
    elif ORDERED:
        token = tl.load(order_ptr + i, mask=in_range, other=0)
    else:
        token = i.to(tl.int64)
    slot = tl.load(slot_ptr + token, mask=in_range, other=-1)
    heads = head_group * BLOCK_H + tl.arange(0, BLOCK_H)
    dims = tl.arange(0, BLOCK_D)
    t, h, d = token[:, None, None], heads[None, :, None], dims[None, None, :]
    rows = in_range[:, None, None] & (h < NUM_HEADS) & (d < HEAD_SIZE)
    k = tl.load(key_ptr + t * key_st + h * key_sh + d, mask=rows, eviction_policy=EVICT)
    v = tl.load(value_ptr + t * value_st + h * value_sh + d, mask=rows, eviction_policy=EVICT)
    if FP8 != 0:  # (per-tensor scales: the paged layout takes no per-head ones)
        k = _fp8_values(k, tl.load(k_scale_ptr), FP8, DIV)
        v = _fp8_values(v, tl.load(v_scale_ptr), FP8, DIV)
    s = slot[:, None, None]
    mask = rows & (s >= 0)
    block = s // BLOCK_SIZE
    offset = s % BLOCK_SIZE
    k_dst = _paged_key_offsets(block, offset, h, d, kc_sb, kc_sh, kc_sx, X)
    v_dst = block * vc_sb + offset * vc_so + h * vc_sh + d * vc_sd
    tl.store(key_cache_ptr + k_dst, k, mask=mask, eviction_policy=EVICT)
    as_loaded = VALUE_AS_LOADED == 1
    if VALUE_AS_LOADED == 2:
        as_loaded = _follow_each_other(slot, BLOCK_SIZE, TOKENS)
    if as_loaded:  # the tile as loaded, [tokens, heads, dims]: its pointers' axes tie (no contiguity known), and
        # Triton 3.6 then puts a warp's lanes on the first axis, the tokens (3.9: on the dims)
        tl.store(value_cache_ptr + v_dst, v, mask=mask, eviction_policy=EVICT)
    else:
        _store_transposed(value_cache_ptr, v_dst, v, mask, EVICT)


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int | None) -> int:
    if device_index is None:  # CPU tensors under TRITON_INTERPRET=1
        return 4
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def launch_config(num_tokens: int, num_heads: int, head_size: int, sm_count: int, fp8: bool = False,
                  max_elements: int | None = None, max_warps: int | None = None, paged: bool = False) -> dict:
    """BLOCK_H, BLOCK_D, num_warps, the eviction policy, the division (DIV), the paged value stored transposed
    (VALUE_T), rows loaded before the slot (LOAD_FIRST), and for the paged layout tokens a program (TOKENS) and
    slot order (SORTED): see the module docstring."""
    block_d = triton.next_power_of_2(head_size)
    heads = triton.next_power_of_2(num_heads)
    block_h = min(heads, max(1, (max_elements or MAX_ELEMENTS_PER_PROGRAM[fp8]) // block_d))
    fewest = min(heads, max(1, MIN_ELEMENTS_PER_PROGRAM // block_d))  # a whole token, or 1024 elements of it
    enough = PROGRAMS_PER_SM * sm_count

    def programs(block_h: int) -> int:
        return num_tokens * triton.cdiv(num_heads, block_h)

    while block_h > fewest and programs(block_h) < enough:
        block_h //= 2
    small = programs(block_h) < enough
    if small:  # a small batch: few programs, each with more warps, and no eviction hint (module docstring)
        num_warps = max_warps or SMALL_BATCH_WARPS  # (a tuning variant's warps as asked)
    else:
        num_warps = max(1, min(max_warps or MAX_WARPS[fp8], block_h * block_d // ELEMENTS_PER_WARP[fp8]))
    config = dict(BLOCK_H=block_h, BLOCK_D=block_d, num_warps=num_warps, DIV=DIVISION, VALUE_T=paged,
                  EVICT="" if small and not paged else EVICTION_POLICY[fp8],  # (a paged decode batch keeps the
                  # hint it was timed with)
                  LOAD_FIRST=small or not fp8 or paged, TOKENS=1, SORTED=False)  # (paged: its
    # one-token programs were not timed awaiting the slot, and its kernel of several tokens takes only True)
    if paged:  # several tokens a program where the grid stays large enough (_paged_tokens_kernel)
        if triton.cdiv(num_tokens, PAGED_TOKENS) * triton.cdiv(num_heads, PAGED_HEADS) >= enough:
            in_slot_order = num_tokens * num_heads * head_size >= SORT_MIN_ELEMENTS
            config.update(BLOCK_H=PAGED_HEADS, num_warps=max_warps or PAGED_WARPS, TOKENS=PAGED_TOKENS,
                          EVICT="",  # (fp8 prefill chunks 896 against 928 us without the hint, random slots alike;
                          # H100, 2026-12-06)
                          SORTED=in_slot_order, VALUE_AS_LOADED=PAGED_VALUE_AS_LOADED,
                          HEADS_FASTEST=in_slot_order and PAGED_SORTED_HEADS_FASTEST, RUNS_KEPT=PAGED_RUNS_KEPT)
    return config


@triton.jit
def _order_keys_kernel(slot_ptr, keys_ptr, runs_ptr, num_tokens, BLOCK_SIZE: tl.constexpr, BLOCK: tl.constexpr,
                       COUNT: tl.constexpr):
    """Each token's block number (-1 for padding) into keys_ptr, a narrow integer type to sort; with COUNT, adds
    to runs_ptr how many slots follow their predecessor's or begin a block (_slot_order)."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    valid = i < num_tokens
    s = tl.load(slot_ptr + i, mask=valid, other=-1)
    tl.store(keys_ptr + i, tl.where(s >= 0, s // BLOCK_SIZE, -1), mask=valid)
    if COUNT:
        previous = tl.load(slot_ptr + i - 1, mask=valid & (i > 0), other=-2)
        follows = valid & (i > 0) & ((s == previous + 1) | ((s >= 0) & (s % BLOCK_SIZE == 0)))
        tl.atomic_add(runs_ptr, tl.sum(follows.to(tl.int32), axis=0))


ORDER_KEYS_BLOCK = 1024  # tokens a program of _order_keys_kernel


def _slot_order(slot_mapping: torch.Tensor, block_size: int, num_blocks: int, runs_kept: bool):
    """The paged kernel's order in one small kernel and a sort: (order, runs). order: the tokens sorted by block
    number, stably (a block's tokens together, in token order), the keys int16 below 2**15 blocks, else int32
    (fewer radix passes than the slots' int64); runs (with `runs_kept`; else not to be read): a one-element count
    of the slots that follow their predecessor's or begin a block, which the kernel reads to take token order
    instead where it is at least half of the num_tokens - 1 that could (RUNS_READ). No host
    synchronisation: captured with the kernel in a CUDA graph. About 40 µs a call of 16384 tokens on an H100,
    where the same order and choice in torch ops (an argsort of the int64 slots, ten small kernels for the choice)
    took about 110 (2026-12-06: notes/triton.md)."""
    n = slot_mapping.numel()
    keys = torch.empty(n, dtype=torch.int16 if num_blocks < 2 ** 15 else torch.int32, device=slot_mapping.device)
    runs = torch.zeros(1, dtype=torch.int32, device=slot_mapping.device) if runs_kept else keys  # (not read then)
    _order_keys_kernel[(triton.cdiv(n, ORDER_KEYS_BLOCK),)](slot_mapping, keys, runs, n, BLOCK_SIZE=block_size,
                                                           BLOCK=ORDER_KEYS_BLOCK, COUNT=runs_kept)
    return torch.argsort(keys, stable=True), runs


def _cache_strides(layout: str, key_cache: torch.Tensor, value_cache: torch.Tensor) -> tuple[int, ...]:
    """(block, offset, head, x-chunk) strides of the key cache, (block, offset, head, element) of the value cache."""
    k, v = key_cache.stride(), value_cache.stride()
    if layout == "paged":
        return (k[0], k[3], k[1], k[2], v[0], v[3], v[1], v[2])
    if layout in NHD_SHAPED:  # [blocks, block_size, heads, head_size] views, any strides
        return (k[0], k[1], k[2], 0, v[0], v[1], v[2], 1)
    if layout == "hnd":
        return (k[0], k[2], k[1], 0, v[0], v[2], v[1], 1)
    raise ValueError(f"layout {layout!r} is not supported by the Triton kernel; choose one of: paged, hnd, "
                     f"{', '.join(NHD_SHAPED)}")


def reshape_and_cache(
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    fp8_format: str | None,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
    layout: str,
    config: dict | None = None,
) -> None:
    """Write key/value [: len(slot_mapping)] into the caches of `layout` (see the module docstring).

    `config` overrides launch parameters (BLOCK_H, num_warps, EVICT, DIV, VALUE_T, LOAD_FIRST; for the paged
    layout TOKENS, tokens a program, SORTED, the tokens taken in slot order, RUNS_KEPT, token order kept where the
    slots mostly follow each other, HEADS_FASTEST, the grid's order, VALUE_AS_LOADED, the value tile's store:
    _paged_tokens_kernel) for experiments (scripts/tune_triton.py); any other key (num_warps, maxnreg) goes to
    Triton's launch as it is.
    """
    num_tokens = slot_mapping.shape[0]
    _, num_heads, head_size = key.shape
    if key.stride(2) != 1 or value.stride(2) != 1:
        raise ValueError("key and value must be contiguous along head_size (stride(2) == 1)")
    if min(key.shape[0], value.shape[0]) < num_tokens:  # every row is read, padding tokens' too (LOAD_FIRST)
        raise ValueError(f"key and value need a row for each of the {num_tokens} slots; they have "
                         f"{key.shape[0]} and {value.shape[0]}")
    if slot_mapping.dtype != torch.int64:  # (block * block stride is computed in the slots' type)
        raise ValueError(f"slot_mapping must be int64, not {slot_mapping.dtype}")
    if slot_mapping.dim() != 1 or (slot_mapping.numel() > 1 and slot_mapping.stride(0) != 1):  # (every kernel
        # reads slot_ptr + token)
        raise ValueError(f"slot_mapping must be one contiguous dimension, not shape {tuple(slot_mapping.shape)} "
                         f"strides {slot_mapping.stride()}")
    if num_tokens == 0:
        return
    block_size = key_cache.shape[3] if layout == "paged" else value_cache.shape[2 if layout == "hnd" else 1]
    if layout == "paged" and key_cache.stride()[3:] != (key_cache.shape[4], 1):
        raise ValueError(f"the paged key cache's x-chunks must be contiguous and follow each other (strides of its "
                         f"last two dims: {key_cache.stride()[3:]}; expected ({key_cache.shape[4]}, 1))")
    if fp8_format is not None:  # the codes' bytes, seen as fp8: the kernels store float32 values there (_fp8_values)
        key_cache, value_cache = key_cache.view(FP8_DTYPES[fp8_format]), value_cache.view(FP8_DTYPES[fp8_format])
    device_index = key.device.index if key.is_cuda else None
    base = launch_config(num_tokens, num_heads, head_size, _sm_count(device_index), fp8=fp8_format is not None,
                         paged=layout == "paged")
    asked = config or {}
    config = {**base, **asked}
    if config["DIV"] == 3 and not key.is_cuda:  # Triton's interpreter's fp8 conversion does not saturate
        config["DIV"] = 2
    tokens, ordered = config.pop("TOKENS"), config.pop("SORTED")
    value_as_loaded = config.pop("VALUE_AS_LOADED", 0)  # (the paged kernel of several tokens only)
    heads_fastest = config.pop("HEADS_FASTEST", False)  # (the same)
    runs_kept = config.pop("RUNS_KEPT", False)  # (the same, in slot order)
    strides = (key.stride(0), key.stride(1), value.stride(0), value.stride(1),
               *_cache_strides(layout, key_cache, value_cache))
    if tokens > 1 or ordered:  # several tokens a program, or in slot order: the paged layout's own kernel
        if layout != "paged":
            raise ValueError(f"TOKENS {tokens} and SORTED {ordered} are for the paged layout, not {layout!r}")
        one_token_only = sorted(k for k in ("VALUE_T", "LOAD_FIRST") if asked.get(k, True) is False)  # (True is
        # what this kernel does too: launch_config's whole dict is a valid config)
        if one_token_only:
            raise ValueError(f"{', '.join(one_token_only)} apply to one token a program; with TOKENS {tokens} or "
                             f"SORTED {ordered} ask for TOKENS=1, SORTED=False too")
        if tokens & (tokens - 1) or k_scale.numel() != 1:
            raise ValueError(f"the paged kernel of several tokens takes a power-of-two TOKENS (not {tokens}) and "
                             f"per-tensor scales (not {k_scale.numel()} values)")
        if value_as_loaded not in (0, 1, 2) or isinstance(value_as_loaded, float):
            raise ValueError(f"VALUE_AS_LOADED {value_as_loaded} is not one of 0 (never), 1 (always), 2 (where a "
                             f"program's tokens follow each other in their blocks)")
        del config["VALUE_T"], config["LOAD_FIRST"]
        order = runs = slot_mapping  # (neither read unless ordered)
        if ordered:
            order, runs = _slot_order(slot_mapping, block_size, key_cache.shape[0], bool(runs_kept))
        grid = (triton.cdiv(num_tokens, tokens), triton.cdiv(num_heads, config["BLOCK_H"]))
        _paged_tokens_kernel[(grid[0] * grid[1],) if heads_fastest else grid](
            key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale, order, runs, num_tokens, *strides,
            NUM_HEADS=num_heads, HEAD_SIZE=head_size, BLOCK_SIZE=block_size, X=key_cache.shape[-1],
            FP8=FP8_CODES[fp8_format], TOKENS=tokens, ORDERED=ordered, VALUE_AS_LOADED=value_as_loaded,
            HEADS_FASTEST=bool(heads_fastest), RUNS_READ=bool(ordered and runs_kept), **config)
        return
    for name in ("VALUE_AS_LOADED", "HEADS_FASTEST", "RUNS_KEPT"):
        if asked.get(name):
            raise ValueError(f"{name} applies to the paged kernel of several tokens; ask for TOKENS > 1 or SORTED "
                             f"too")
    grid = (num_tokens, triton.cdiv(num_heads, config["BLOCK_H"]))
    _write_kernel[grid](
        key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale,
        *strides, NUM_HEADS=num_heads, HEAD_SIZE=head_size, BLOCK_SIZE=block_size,
        PAGED=layout == "paged", X=key_cache.shape[-1] if layout == "paged" else 1,
        FP8=FP8_CODES[fp8_format], PER_HEAD=k_scale.dim() == 1,
        **config,
    )
