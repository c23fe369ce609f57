"""The read side and the other cache ops (convert-fp8, gather, cp-gather, swap-blocks, indexer-gather,
upconvert-gather, mla-grouped, concat-mla-q, mla-rope): each reference against a naive per-token loop written
from vLLM's semantics (fp8 decoded and rounded bit by bit in Python), kvbench's Triton kernels through Triton's
interpreter on CPU, the verifier's dense outputs, and on a GPU (marked `gpu`) every implementation, vLLM's
included."""

import functools
import math
import struct

import pytest
import torch

from kvbench import impls, ops
from kvbench.errors import CaseError, Unavailable, VerificationError
from kvbench.ops import reads
from kvbench.ops.verify import verify
from kvbench.runner import make_case, prepare

E4M3, E5M2 = torch.float8_e4m3fn, torch.float8_e5m2


# --- naive fp8 and rounding, from the formats' definitions -------------------------------------------------------

def fp8_value(code: int, fmt: str) -> float:
    """The value of an fp8 code (e4m3fn: bias 7, no inf, 0x7f/0xff NaN; e5m2: bias 15, IEEE-like)."""
    sign = -1.0 if code & 0x80 else 1.0
    mant_bits, bias = (3, 7) if fmt == "e4m3" else (2, 15)
    exponent = (code >> mant_bits) & ((1 << (7 - mant_bits)) - 1)
    mantissa = code & ((1 << mant_bits) - 1)
    if exponent == 0:
        return sign * mantissa / (1 << mant_bits) * 2.0 ** (1 - bias)
    return sign * (1 + mantissa / (1 << mant_bits)) * 2.0 ** (exponent - bias)


@functools.lru_cache(maxsize=None)
def finite_values(fmt: str) -> tuple[tuple[float, int], ...]:
    """(value, code) of every finite code of the format."""
    return tuple((fp8_value(c, fmt), c) for c in range(256) if not (fmt == "e4m3" and c & 0x7F == 0x7F)
                 and not (fmt == "e5m2" and (c >> 2) & 0x1F == 0x1F))


def fp8_round(x: float, fmt: str) -> int:
    """Saturate to the largest finite value, then the nearest code (ties to the even code, zero keeps x's sign)."""
    table = finite_values(fmt)
    top = max(v for v, _ in table)
    x = max(-top, min(top, x))
    negative = math.copysign(1.0, x) < 0
    return min(table, key=lambda vc: (abs(vc[0] - x), vc[1] & 1, (vc[1] >= 0x80) != negative))[1]


def f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def f32_bits(x: float) -> int:
    return struct.unpack("I", struct.pack("f", x))[0]


def round_to(x: float, dtype: torch.dtype) -> int:
    """The bits of the float32 value x rounded to nearest even in `dtype` (as an integer of its width)."""
    if dtype == torch.float32:
        return f32_bits(x)
    if dtype == torch.float16:
        return struct.unpack("H", struct.pack("e", x))[0]  # struct rounds half to even
    bits = f32_bits(x)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF


def as_bits(t: torch.Tensor) -> list[int]:
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[t.element_size()]
    mask = (1 << (8 * t.element_size())) - 1
    return [v & mask for v in t.contiguous().view(width).flatten().tolist()]


# --- convert-fp8 ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("direction", ["dequantize", "quantize"])
@pytest.mark.parametrize("kv", ["fp8", "fp8_e5m2"])
@pytest.mark.parametrize("dtype", ["bfloat16", "half", "float"])
def test_convert_fp8_reference_matches_a_naive_loop(direction, kv, dtype):
    case = ops.get("convert-fp8").Case(num_tokens=32, block_size=16, num_heads=2, head_size=16, device="cpu",
                                       direction=direction, kv_cache_dtype=kv, dtype=dtype)
    w = ops.workload(case, seed=11)
    ops.of(case).reference_write(w)
    fmt = case.fp8_format
    scale = f32(float(w.scale))
    got = as_bits(w.dst)
    for i, x in enumerate(w.src.flatten().tolist()):
        if direction == "dequantize":
            want = round_to(f32(fp8_value(int(x), fmt) * scale), case.torch_dtype)
        else:
            want = fp8_round(f32(f32(x) / scale), fmt)
        assert got[i] == want, (i, x)


def test_convert_fp8_case_needs_whole_blocks():
    with pytest.raises(CaseError) as exc:
        ops.get("convert-fp8").Case(num_tokens=40, block_size=16, device="cpu")
    assert "\n" not in str(exc.value) and "multiple of block_size 16" in str(exc.value) and "32 or 48" in \
        str(exc.value)


# --- gathers ----------------------------------------------------------------------------------------------------

def naive_rows(case, table, cu, starts, num_tokens):
    """[(destination row, block, offset)] walking each sequence from its start, one token at a time."""
    out = []
    for b in range(len(cu) - 1):
        for i in range(cu[b + 1] - cu[b]):
            p = i + (starts[b] if starts is not None else 0)
            out.append((cu[b] + i, table[b][p // case.block_size], p % case.block_size))
    assert len(out) == num_tokens
    return out


@pytest.mark.parametrize("op, kv, dtype", [("gather", "auto", "bfloat16"), ("gather", "fp8", "float"),
                                           ("gather", "fp8", "bfloat16"), ("cp-gather", "auto", "half"),
                                           ("cp-gather", "fp8", "bfloat16")])
@pytest.mark.parametrize("batch", reads.BATCHES)
def test_gather_references_match_a_naive_loop(op, kv, dtype, batch):
    case = ops.get(op).Case(num_tokens=150, num_blocks=40, block_size=16, kv_lora_rank=24, pe_dim=8, device="cpu",
                            kv_cache_dtype=kv, dtype=dtype, batch=batch)
    w = ops.workload(case, seed=5)
    w.dst.view(torch.uint8).fill_(0xAB)
    ops.of(case).reference_write(w)
    b = w.batch
    rows = naive_rows(case, b.block_table.tolist(), b.cu_seq_lens.tolist(), b.seq_starts.tolist(),
                      case.num_tokens)
    dequantize = op == "gather" and kv == "fp8"
    scale = f32(float(w.scale)) if dequantize else None
    for row, block, offset in rows:
        src, got = w.src_cache[block, offset], w.dst[row]
        if dequantize:
            want = [round_to(f32(fp8_value(c, "e4m3") * scale), case.torch_dtype) for c in src.tolist()]
            assert as_bits(got) == want, row
        else:
            assert as_bits(got) == as_bits(src), row
    assert as_bits(w.dst[case.num_tokens:]) == [0xABAB if w.dst.element_size() == 2 else
                                               (0xAB if w.dst.element_size() == 1 else 0xABABABAB)] * \
        (reads.DENSE_SLACK * case.entry)


def test_batches_are_as_documented():
    c = ops.get("gather").Case(num_tokens=3000, num_blocks=400, block_size=16, device="cpu")
    plan = c.plan()
    assert sum(n for _, n in plan) == 3000 and len(plan) > 4 and len({n for _, n in plan}) > 3  # mixed lengths
    assert all(s % 16 == 0 for s, _ in plan)  # gather: starts per block
    cp = ops.get("cp-gather").Case(num_tokens=3000, num_blocks=400, block_size=16, device="cpu")
    assert any(s % 16 for s, _ in cp.plan())  # cp-gather: starts inside blocks
    b = reads.make_batch(c)
    used = torch.cat([b.block_table[i, : -(-(s + n) // 16)] for i, (s, n) in enumerate(plan)])
    assert used.unique().numel() == used.numel()  # each sequence's blocks its own
    assert not torch.equal(used, used.sort().values)  # shuffled
    u = ops.get("gather").Case(num_tokens=1100, num_blocks=400, block_size=16, batch="uniform", device="cpu").plan()
    assert [n for _, n in u] == [512, 512, 76] and all(s == 0 for s, _ in u)
    one = reads.make_batch(ops.get("gather").Case(num_tokens=40, num_blocks=8, block_size=16, batch="contiguous",
                                                  device="cpu"))
    assert one.block_table.tolist() == [[0, 1, 2]] and one.source_slots.tolist() == list(range(40))


def test_gather_needs_enough_blocks_in_one_line():
    with pytest.raises(CaseError) as exc:
        ops.get("gather").Case(num_tokens=1000, num_blocks=40, block_size=16, device="cpu")
    assert "\n" not in str(exc.value) and "--num-blocks" in str(exc.value)
    with pytest.raises(CaseError) as exc:
        ops.get("cp-gather").Case(num_tokens=64, l2="cold", device="cpu")
    assert "l2 'cold'" in str(exc.value)


# --- swap-blocks --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("transfer", ["gpu-cpu", "cpu-gpu", "gpu-gpu"])
@pytest.mark.parametrize("kv", ["auto", "fp8"])
def test_swap_blocks_reference_matches_a_naive_loop(transfer, kv):
    case = ops.get("swap-blocks").Case(num_tokens=48, num_blocks=8, block_size=16, num_heads=2, head_size=8,
                                       num_layers=3, device="cpu", transfer=transfer, kv_cache_dtype=kv)
    w = ops.workload(case, seed=3)
    w.dst.view(torch.uint8).fill_(0x5A)
    ops.of(case).reference_write(w)
    mapping = {int(d): int(s) for s, d in w.block_mapping.tolist()}
    assert len(mapping) == 3 and len(set(mapping.values())) == 3
    for layer in range(3):
        src, dst = w.layer(w.src, layer), w.layer(w.dst, layer)
        for block in range(8):
            if block in mapping:
                assert as_bits(dst[block]) == as_bits(src[mapping[block]]), (layer, block)
            else:
                assert set(as_bits(dst[block].contiguous().view(torch.uint8))) == {0x5A}, (layer, block)


def test_swap_blocks_wrong_block_and_missing_layer_fail():
    case = ops.get("swap-blocks").Case(num_tokens=64, num_blocks=16, block_size=16, device="cpu")
    w = ops.workload(case, seed=4)
    s, d = (int(x) for x in w.block_mapping[0])

    def wrong_block():
        ops.of(case).reference_write(w)
        w.dst[0, d] = w.src[0, (s + 1) % case.num_blocks]

    with pytest.raises(VerificationError, match="differ from the reference"):
        verify("wrong", [w], wrong_block)

    def one_layer():
        ops.of(case).reference_write(w)
        w.dst[1].view(torch.uint8).fill_(0xFF)

    with pytest.raises(VerificationError, match="never written"):
        verify("one layer", [w], one_layer)


def test_swap_blocks_case():
    c = ops.get("swap-blocks").Case(num_tokens=256, device="cpu")
    assert c.copies == 16 and c.page_bytes == 16 * 8 * 256 * 2 and c.bytes_moved == 2 * 2 * 16 * c.page_bytes
    with pytest.raises(CaseError, match="multiple of block_size 16"):
        ops.get("swap-blocks").Case(num_tokens=40, device="cpu")
    with pytest.raises(CaseError, match="transfer 'cpu-cpu'"):
        ops.get("swap-blocks").Case(num_tokens=32, device="cpu", transfer="cpu-cpu")


# --- indexer-gather and upconvert-gather ------------------------------------------------------------------------

@pytest.mark.parametrize("head_dim", [128, 256])
def test_indexer_gather_reference_matches_a_naive_loop(head_dim):
    case = ops.get("indexer-gather").Case(num_tokens=90, num_blocks=24, block_size=16, head_dim=head_dim,
                                          device="cpu")
    w = ops.workload(case, seed=6)
    w.k_all.fill_(0)
    w.scale_all.fill_(0)
    ops.of(case).reference_write(w)
    b = w.batch
    groups = head_dim // 128
    per_block = w.kv_cache.view(case.num_blocks, -1).tolist()
    for row, block, o in naive_rows(case, b.block_table.tolist(), b.cu_seq_lens.tolist(), None, 90):
        codes = per_block[block][o * head_dim:(o + 1) * head_dim]
        first = 16 * head_dim + o * groups * 4  # the block's codes, then its scales
        assert w.k_all[row].tolist() == codes and w.scale_all[row].tolist() == per_block[block][first:first + 4 *
                                                                                                 groups], row
        assert all(2.0 ** -12 <= s <= 4 for s in w.scale_all[row].view(torch.float32).tolist())


def test_upconvert_gather_reference_matches_a_naive_loop():
    case = ops.get("upconvert-gather").Case(num_tokens=70, num_blocks=24, block_size=16, device="cpu")
    w = ops.workload(case, seed=8)
    ops.of(case).reference_write(w)
    b = w.batch
    rows = naive_rows(case, b.block_table.tolist(), b.cu_seq_lens.tolist(), b.seq_starts.tolist(), 70)
    assert any(s % 16 for s in b.seq_starts.tolist())  # starts inside blocks
    for row, block, o in rows[::7]:
        raw = w.src_cache[block, o]
        scales = [f32(v) for v in raw[512:528].view(torch.float32).tolist()]
        want = [round_to(f32(fp8_value(c, "e4m3") * scales[j // 128]), torch.bfloat16)
                for j, c in enumerate(raw[:512].tolist())]
        want += as_bits(raw[528:].view(torch.bfloat16))
        assert as_bits(w.dst[row]) == want, row


def test_upconvert_gather_is_bf16_only():
    with pytest.raises(CaseError, match="bfloat16"):
        ops.get("upconvert-gather").Case(num_tokens=16, dtype="half", device="cpu")


# --- mla-grouped ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kv", ["auto", "fp8"])
def test_mla_grouped_reference_matches_a_naive_loop(kv):
    case = ops.get("mla-grouped").Case(num_tokens=12, num_blocks=4, block_size=16, kv_lora_rank=32, pe_dim=16,
                                       num_layers=3, device="cpu", slots="padded", kv_cache_dtype=kv)
    w = ops.workload(case, seed=9)
    for cache in w.caches:
        cache.view(torch.uint8).fill_(0)
    ops.of(case).reference_write(w)
    assert w.kv_cache_ptrs.tolist() == [c.data_ptr() for c in w.caches]
    for layer in range(3):
        scale = f32(float(w.kv_scales[layer]))
        rows = w.caches[layer].view(-1, case.entry)
        written = {}
        for t, slot in enumerate(w.layer_slots[layer].tolist()):
            if slot < 0:
                continue
            x = torch.cat([w.kv_c[layer, t], w.k_pe[layer, t]])
            want = [fp8_round(f32(f32(v) / scale), "e4m3") for v in x.float().tolist()] if kv == "fp8" else as_bits(x)
            written[slot] = want
        assert len(written) == 9  # the last quarter is padding
        for slot in range(case.num_slots):
            assert as_bits(rows[slot]) == written.get(slot, [0] * case.entry), (layer, slot)


# --- concat-mla-q -----------------------------------------------------------------------------------------------

def test_concat_mla_q_reference_matches_a_naive_loop_and_catches_a_contiguous_reading():
    case = ops.get("concat-mla-q").Case(num_tokens=5, num_heads=3, kv_lora_rank=16, pe_dim=8, device="cpu")
    w = ops.workload(case, seed=12)
    assert not w.ql_nope.is_contiguous() and not w.q_pe.is_contiguous()
    ops.of(case).reference_write(w)
    for t in range(5):
        for h in range(3):
            assert as_bits(w.q_out[t, h]) == as_bits(w.ql_nope[t, h]) + as_bits(w.q_pe[t, h]), (t, h)

    def ignores_strides():
        w.q_out[..., :16] = w.ql_nope.as_strided(w.ql_nope.shape, (3 * 16, 16, 1))
        w.q_out[..., 16:] = w.q_pe

    with pytest.raises(VerificationError, match="differ from the reference"):
        verify("contiguous reader", [w], ignores_strides)


# --- mla-rope ---------------------------------------------------------------------------------------------------

def value_of(bits: int, dtype: torch.dtype) -> float:
    if dtype == torch.bfloat16:
        return struct.unpack("f", struct.pack("I", bits << 16))[0]
    return struct.unpack("e", struct.pack("H", bits))[0]


@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize("dtype", ["bfloat16", "half"])
def test_mla_rope_reference_matches_a_naive_loop(neox, dtype):
    case = ops.get("mla-rope").Case(num_tokens=8, num_blocks=2, block_size=16, num_heads=2, kv_lora_rank=16,
                                    pe_dim=8, device="cpu", slots="padded", is_neox=neox, dtype=dtype)
    w = ops.workload(case, seed=13)
    w.kv_cache.view(torch.uint8).fill_(0)
    q0, k0 = w.q_pe.clone(), w.k_pe.clone()
    ops.of(case).reference_write(w)
    dt = case.torch_dtype

    def rd(x: float) -> float:  # round a float32 value to the dtype, as vLLM's 16-bit arithmetic
        return value_of(round_to(f32(x), dt), dt)

    def naive(vec, position):
        table = w.cos_sin_cache[position].float().tolist()
        cos, sin, out = table[:4], table[4:], list(vec)
        for i in range(4):
            xi, yi = (i, i + 4) if neox else (2 * i, 2 * i + 1)
            x, y = vec[xi], vec[yi]
            out[xi] = rd(rd(x * cos[i]) - rd(y * sin[i]))
            out[yi] = rd(rd(y * cos[i]) + rd(x * sin[i]))
        return out

    rows = w.kv_cache.view(-1, case.entry)
    for t, slot in enumerate(w.slot_mapping.tolist()):
        p = int(w.positions[t])
        for h in range(2):
            assert w.q_pe[t, h].float().tolist() == naive(q0[t, h].float().tolist(), p), (t, h)
        if slot < 0:  # padding: its query is rotated, its key is not, nothing is written
            assert torch.equal(w.k_pe[t], k0[t])
            continue
        k = naive(k0[t].float().tolist(), p)
        assert w.k_pe[t].float().tolist() == k, t
        assert rows[slot].float().tolist() == w.kv_c[t].float().tolist() + k, t


def test_mla_rope_checks_the_rotation_and_the_padding():
    case = ops.get("mla-rope").Case(num_tokens=16, num_blocks=4, block_size=16, num_heads=2, device="cpu",
                                    slots="padded")
    w = ops.workload(case, seed=1)

    def no_query_rotation():
        q = w.q_pe.clone()
        ops.of(case).reference_write(w)
        w.q_pe.copy_(q)

    with pytest.raises(VerificationError, match="rotated q_pe: .* differ"):
        verify("lazy", [w], no_query_rotation)
    w = ops.workload(case, seed=1)
    ops.of(case).reference_write(w)
    w.calls_verified = 1  # the timed path: several rotations deep
    assert verify("correct", [w], lambda: ops.of(case).reference_write(w)).method == "bit-exact"

    def rotates_padding_keys():
        ops.of(case).reference_write(w)
        w.k_pe[-1] += 1

    with pytest.raises(VerificationError, match="k_pe of padding tokens"):
        verify("padding", [w], rotates_padding_keys)


def test_mla_rope_case():
    with pytest.raises(CaseError, match="multiply-add"):
        ops.get("mla-rope").Case(num_tokens=16, dtype="float", device="cpu")
    with pytest.raises(CaseError, match="in place"):
        ops.get("mla-rope").Case(num_tokens=16, l2="cold", device="cpu")


# --- verification of dense outputs ------------------------------------------------------------------------------

def test_a_gather_that_skips_the_last_sequence_or_writes_past_the_end_fails():
    case = ops.get("cp-gather").Case(num_tokens=100, num_blocks=40, block_size=16, device="cpu")
    w = ops.workload(case, seed=2)
    ref = ops.of(case).reference_write
    last = int(w.batch.cu_seq_lens[-2])

    def short():
        ref(w)
        w.dst[last:].view(torch.uint8).fill_(0xFF)

    with pytest.raises(VerificationError, match=r"tokens .* never written"):
        verify("short", [w], short)

    def overrun():
        ref(w)
        w.dst[case.num_tokens] = 0

    with pytest.raises(VerificationError, match="written outside"):
        verify("overrun", [w], overrun)

    def wrong_block():
        ref(w)
        w.dst[:10] = w.src_cache[int(w.batch.block_table[0, 0]) + 1, :10]

    with pytest.raises(VerificationError, match="differ from the reference"):
        verify("wrong block", [w], wrong_block)

    def clobbers_cache():
        ref(w)
        w.src_cache[0, 0, 0] += 1

    with pytest.raises(VerificationError, match="changed its inputs .*src_cache"):
        verify("clobber", [w], clobbers_cache)


# --- Triton kernels through the interpreter ---------------------------------------------------------------------

def _power_of_two_scale(w):
    """bf16 / fp16 outputs of fp8 values times a power of two are exact: the interpreter's float32 -> bf16 cast
    truncates instead of rounding (on a GPU it rounds to nearest even)."""
    w.scale.fill_(0.0625)


INTERPRETED = [("convert-fp8", dict(direction="dequantize", num_heads=2, head_size=64)),
               ("convert-fp8", dict(direction="dequantize", kv_cache_dtype="fp8_e5m2", dtype="float")),
               ("convert-fp8", dict(direction="quantize", dtype="float")),
               ("gather", dict(kv_cache_dtype="auto")), ("gather", dict(kv_cache_dtype="fp8")),
               ("gather", dict(kv_cache_dtype="fp8", dtype="float", batch="uniform")),
               ("cp-gather", dict()), ("cp-gather", dict(kv_cache_dtype="fp8", batch="contiguous")),
               ("indexer-gather", dict()), ("indexer-gather", dict(head_dim=256, batch="uniform")),
               ("upconvert-gather", dict()), ("upconvert-gather", dict(batch="contiguous"))]


@pytest.mark.parametrize("op, fields", INTERPRETED)
def test_triton_read_kernels_match_the_reference_in_the_interpreter(op, fields):
    impl = impls.get("triton", op)
    if impl.unavailable_reason("cpu"):
        pytest.skip(impl.unavailable_reason("cpu"))
    extra = dict(num_blocks=40) if op != "convert-fp8" else {}
    case = make_case("triton", op=op, num_tokens=208, block_size=16, device="cpu", **extra, **fields)
    w = ops.workload(case, seed=7)
    if getattr(case, "is_fp8", False) and case.torch_dtype != torch.float32:
        _power_of_two_scale(w)
    if op == "upconvert-gather":  # power-of-two tile scales: exact bf16 products (see _power_of_two_scale)
        w.src_cache[..., 512:528] = torch.full(w.src_cache.shape[:2] + (4,), 0.25).view(torch.uint8).view(
            *w.src_cache.shape[:2], 16)
    if op == "convert-fp8" and case.direction == "quantize":  # values that need no rounding (see test_family)
        codes = reads.random_fp8_codes(w.src.shape, E4M3, torch.Generator().manual_seed(1), "cpu")
        w.src.copy_(codes.view(E4M3).float() * float(w.scale))
    result = verify(impl.name, [w], impl.bind(w), impl.compare)
    assert result.tokens_checked == 208 and result.method == "bit-exact"


@pytest.mark.parametrize("kv, tokens, warps, chunk", [("auto", 32, 1, 256), ("fp8", 2, 8, 128),
                                                 ("auto", 16, 2, None)])
def test_gather_launch_variants_match_the_reference_in_the_interpreter(kv, tokens, warps, chunk):
    """scripts/tune_triton.py's gather variants (rows per program, warps, the piece a row is copied in) gather the
    same rows."""
    from kvbench.impls.kernels.gather import gather_rows

    impl = impls.get("triton", "gather")
    if impl.unavailable_reason("cpu"):
        pytest.skip(impl.unavailable_reason("cpu"))
    case = make_case("triton", op="gather", num_tokens=208, block_size=16, num_blocks=40, device="cpu",
                     kv_cache_dtype=kv)
    w = ops.workload(case, seed=7)
    if case.is_fp8:
        _power_of_two_scale(w)
    b = w.batch
    write = lambda: gather_rows(w.src_cache, w.dst, b.block_table, b.cu_seq_lens, case.num_tokens, b.seq_starts,
                                b.token_to_seq, case.fp8_format, w.scale, tokens=tokens, num_warps=warps, chunk=chunk)
    assert verify(impl.name, [w], write, impl.compare).method == "bit-exact"


# --- through prepare and the timed path -------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["convert-fp8", "gather", "cp-gather", "swap-blocks", "indexer-gather",
                                "upconvert-gather", "mla-grouped", "concat-mla-q", "mla-rope"])
def test_torch_read_reference_through_prepare_and_the_timed_path(op):
    extra = {} if op == "convert-fp8" else dict(num_blocks=64)
    if op in ("swap-blocks", "concat-mla-q", "mla-rope"):
        extra["num_heads"] = 2
    p = prepare(make_case("torch", op=op, num_tokens=64, block_size=16, device="cpu", **extra), "torch")
    p.sampler("no_graph").measure(2)
    assert p.check_timed("no_graph").tokens_checked == 64
    assert p.case.bytes_moved > 0


def test_read_ops_bytes_moved():
    g = ops.get("gather").Case(num_tokens=100, device="cpu", kv_cache_dtype="fp8")
    assert g.bytes_moved == 100 * 576 * (1 + 2)
    assert ops.get("cp-gather").Case(num_tokens=100, device="cpu").bytes_moved == 2 * 100 * 576 * 2
    assert ops.get("convert-fp8").Case(num_tokens=32, device="cpu").bytes_moved == 32 * 8 * 128 * 3


# --- on a GPU: every implementation, vLLM's kernels included ----------------------------------------------------

def _run_or_skip(case, implementation):
    """The prepared (verified) case, or a skip where kvbench's rules make one: an implementation not here, or one
    that cannot run the case (Unavailable, with its reason: e.g. a vLLM release that refuses a dtype)."""
    impl = impls.get(implementation, case.OP)
    reason = impl.unavailable_reason(case.device)
    if reason:
        pytest.skip(f"{implementation}: {reason}")
    try:
        return prepare(case, implementation)
    except Unavailable as exc:
        pytest.skip(str(exc))


def _bit_exact_then_timed(case, implementation, tokens, timed_per_call=False):
    """Prepared (verified bit-exact on `tokens` tokens), then timed in a CUDA graph and checked again: the timed
    path writes `tokens` per call of a cold-L2 rotation where `timed_per_call` (else `tokens` in all)."""
    p = _run_or_skip(case, implementation)
    assert p.verified.method == "bit-exact" and p.verified.tokens_checked == tokens
    p.sampler("cudagraph").measure(3)
    assert p.check_timed("cudagraph").tokens_checked == tokens * (p.rotation if timed_per_call else 1)


GPU_READS = ([("convert-fp8", dict(direction=d, kv_cache_dtype=kv, dtype=dt)) for d in ("dequantize", "quantize")
              for kv in ("fp8", "fp8_e5m2") for dt in ("bfloat16", "half", "float")]
             + [("convert-fp8", dict(num_heads=1, head_size=576, block_size=64))]
             + [("gather", dict(kv_cache_dtype=kv, dtype=dt, batch=b)) for kv in ("auto", "fp8")
                for dt in ("bfloat16", "half", "float") for b in reads.BATCHES]
             + [("gather", dict(block_size=16))]
             + [("cp-gather", dict(kv_cache_dtype=kv, dtype=dt, batch=b)) for kv in ("auto", "fp8")
                for dt in ("bfloat16", "float") for b in reads.BATCHES]
             + [("cp-gather", dict(block_size=16, kv_lora_rank=128, pe_dim=64))]
             + [("indexer-gather", dict(batch=b)) for b in reads.BATCHES]
             + [("indexer-gather", dict(head_dim=256, block_size=16))]
             + [("upconvert-gather", dict(batch=b)) for b in reads.BATCHES]
             + [("upconvert-gather", dict(block_size=16))])


@pytest.mark.gpu
@pytest.mark.parametrize("implementation", ["torch", "triton", "vllm"])
@pytest.mark.parametrize("op, fields", GPU_READS)
@pytest.mark.parametrize("num_tokens", [48, 4096])
def test_gpu_read_ops_are_bit_exact(implementation, op, fields, num_tokens):
    try:
        case = make_case(implementation, op=op, num_tokens=num_tokens, **fields)
    except CaseError as exc:
        pytest.skip(str(exc))
    p = _run_or_skip(case, implementation)
    assert p.verified.method == "bit-exact" and p.verified.tokens_checked == num_tokens


@pytest.mark.gpu
@pytest.mark.parametrize("implementation", ["torch", "triton", "vllm"])
@pytest.mark.parametrize("op", ["convert-fp8", "gather", "cp-gather", "indexer-gather", "upconvert-gather"])
def test_gpu_read_ops_timed_path_at_65536_tokens(implementation, op):
    p = _run_or_skip(make_case(implementation, op=op, num_tokens=65536), implementation)
    p.sampler("cudagraph").measure(3)
    assert p.check_timed("cudagraph").tokens_checked == 65536


@pytest.mark.gpu
@pytest.mark.parametrize("implementation", ["torch", "vllm", "vllm-batch"])
@pytest.mark.parametrize("transfer", ["gpu-cpu", "cpu-gpu", "gpu-gpu"])
@pytest.mark.parametrize("kv, dtype", [("auto", "bfloat16"), ("auto", "float"), ("fp8", "bfloat16")])
@pytest.mark.parametrize("num_tokens, block_size", [(16, 16), (4096, 16), (4096, 64)])
def test_gpu_swap_blocks(implementation, transfer, kv, dtype, num_tokens, block_size):
    case = make_case(implementation, op="swap-blocks", num_tokens=num_tokens, block_size=block_size,
                     transfer=transfer, kv_cache_dtype=kv, dtype=dtype)
    p = _run_or_skip(case, implementation)
    assert p.verified.method == "bit-exact" and p.verified.tokens_checked == num_tokens
    p.sampler("no_graph").measure(3)
    assert p.check_timed("no_graph").tokens_checked == num_tokens


@pytest.mark.gpu
@pytest.mark.parametrize("implementation", ["torch", "vllm", "vllm-batch"])
def test_gpu_swap_blocks_in_a_cuda_graph(implementation):
    """Copies to pinned memory are capturable; vLLM's batched copy is not (its graph_reason): cudagraph is then a
    skip saying so, and its no_graph time is checked instead."""
    p = _run_or_skip(make_case(implementation, op="swap-blocks", num_tokens=1024), implementation)
    if p.impl.graph_reason:
        with pytest.raises(Unavailable, match="cannot capture.*mode no_graph"):
            p.sampler("cudagraph")
        p.sampler("no_graph").measure(3)
        assert p.check_timed("no_graph").tokens_checked == 1024
        return
    p.sampler("cudagraph").measure(3)
    assert p.check_timed("cudagraph").tokens_checked == 1024


@pytest.mark.gpu
@pytest.mark.parametrize("implementation", ["torch", "vllm"])
@pytest.mark.parametrize("kv, dtype", [("auto", "bfloat16"), ("auto", "half"), ("fp8", "bfloat16"),
                                       ("fp8", "float")])
@pytest.mark.parametrize("slots, num_tokens", [("padded", 1000), ("decode-padded", 64), ("prefill", 4096)])
@pytest.mark.parametrize("l2", ["warm", "cold"])
def test_gpu_mla_grouped(implementation, kv, dtype, slots, num_tokens, l2):
    case = make_case(implementation, op="mla-grouped", num_tokens=num_tokens, kv_cache_dtype=kv, dtype=dtype,
                     slots=slots, l2=l2)
    _bit_exact_then_timed(case, implementation, case.valid_tokens, timed_per_call=True)


@pytest.mark.gpu
@pytest.mark.parametrize("implementation", ["torch", "vllm"])
@pytest.mark.parametrize("dtype", ["bfloat16", "half"])
@pytest.mark.parametrize("num_heads, num_tokens", [(128, 1), (128, 1024), (16, 4096), (64, 33)])
def test_gpu_concat_mla_q(implementation, dtype, num_heads, num_tokens):
    case = make_case(implementation, op="concat-mla-q", num_tokens=num_tokens, num_heads=num_heads, dtype=dtype)
    _bit_exact_then_timed(case, implementation, num_tokens)


@pytest.mark.gpu
@pytest.mark.parametrize("implementation", ["torch", "vllm"])
@pytest.mark.parametrize("kv", ["auto", "fp8", "fp8_e5m2"])
@pytest.mark.parametrize("dtype", ["bfloat16", "half"])
@pytest.mark.parametrize("neox", [False, True])
@pytest.mark.parametrize("slots, num_tokens", [("decode-padded", 64), ("mixed", 2048)])
def test_gpu_mla_rope(implementation, kv, dtype, neox, slots, num_tokens):
    case = make_case(implementation, op="mla-rope", num_tokens=num_tokens, kv_cache_dtype=kv, dtype=dtype,
                     is_neox=neox, slots=slots)
    _bit_exact_then_timed(case, implementation, case.valid_tokens)


def _x_ideal(case, implementation) -> float:
    from kvbench.measure import bandwidth, machine

    p = _run_or_skip(case, implementation)
    per_call = sorted(p.sampler("cudagraph").measure(10))[5]
    bw = bandwidth.copy_bandwidth("cuda", machine.device_key(machine.info("cuda")))
    return per_call / bw.ideal_s(case)


@pytest.mark.gpu
@pytest.mark.parametrize("op, fields", [("convert-fp8", dict(direction="dequantize")),
                                        ("convert-fp8", dict(direction="quantize")),
                                        ("gather", dict(kv_cache_dtype="auto")), ("gather", dict(kv_cache_dtype="fp8")),
                                        ("cp-gather", dict()), ("indexer-gather", dict()),
                                        ("upconvert-gather", dict())])
def test_gpu_triton_read_kernels_reach_85_percent_of_the_copy_rate(op, fields):
    """The yardstick, as for the writes: kvbench's kernel at large sizes within 1 / 0.85 of the copy limit."""
    x = _x_ideal(make_case("triton", op=op, num_tokens=65536, **fields), "triton")
    assert x <= 1 / 0.85, f"{op} {fields}: {x:.2f} x ideal ({100 / x:.0f} % of the copy rate)"


def test_gpu_tests_cover_every_read_op_and_implementation():
    ops_here = {op for op, _ in GPU_READS}
    assert ops_here == {"convert-fp8", "gather", "cp-gather", "indexer-gather", "upconvert-gather"}
    for op in ops_here:
        assert set(impls.names(op)) == {"torch", "triton", "vllm"}
    assert set(impls.names("swap-blocks")) == {"torch", "vllm", "vllm-batch"}
    assert math.isfinite(fp8_value(0x7E, "e4m3")) and fp8_value(0x7E, "e4m3") == 448.0
