"""The write family (mla, indexer, token-head-quant, kv paged-iv): each op's reference against a naive per-token
loop written from vLLM's semantics, known values from vLLM's tests and PRs, and kvbench's Triton kernels through
Triton's interpreter on CPU (fp8 cases on inputs that need no rounding: the interpreter rounds fp8 wrongly when a
carry reaches the exponent)."""

import struct

import pytest
import torch

from kvbench import ops
from kvbench.impls import get
from kvbench.ops import indexer, mla, token_head_quant
from kvbench.ops.verify import verify
from kvbench.runner import make_case, prepare

E4M3 = torch.float8_e4m3fn


def naive_pow2_at_least(u: float) -> float:
    """The smallest power of two >= u (u a positive float32 value)."""
    p = 2.0**-30
    while p < u:
        p *= 2
    while p / 2 >= u:
        p /= 2
    return p


def f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def naive_mla(case, kv_c, k_pe, slots, scale):
    """{slot: expected row bytes}, one token at a time."""
    out = {}
    for t, slot in enumerate(slots.tolist()):
        if slot < 0:
            continue
        if case.kv_cache_dtype == "fp8_ds_mla":
            row = bytearray()
            scales = []
            for tile in range(4):
                x = kv_c[t, tile * 128:(tile + 1) * 128].float()
                s = naive_pow2_at_least(max(f32(x.abs().max().item() / 448.0), 1e-4))
                scales.append(s)
                row += (x / s).clamp(-448, 448).to(E4M3).view(torch.uint8).numpy().tobytes()
            row += struct.pack("4f", *scales) + k_pe[t].contiguous().view(torch.uint8).numpy().tobytes()
        elif case.kv_cache_dtype == "auto":
            row = torch.cat([kv_c[t], k_pe[t]]).view(torch.uint8).numpy().tobytes()
        else:
            fmt = {"fp8": E4M3, "fp8_e5m2": torch.float8_e5m2}[case.kv_cache_dtype]
            x = torch.cat([kv_c[t], k_pe[t]]).float() / (1.0 if case.skip_scale else scale.item())
            limit = torch.finfo(fmt).max
            row = x.clamp(-limit, limit).to(fmt).view(torch.uint8).numpy().tobytes()
        out[slot] = bytes(row)
    return out


@pytest.mark.parametrize("kv, skip", [("auto", False), ("fp8", False), ("fp8", True), ("fp8_e5m2", False),
                                      ("fp8_ds_mla", False)])
def test_mla_reference_matches_a_naive_loop(kv, skip):
    case = mla.Case(num_tokens=12, num_blocks=3, block_size=16, kv_cache_dtype=kv, skip_scale=skip, device="cpu",
                    slots="padded")
    w = ops.workload(case, seed=3)
    w.kv_cache.fill_(0)
    mla.reference_write(w)
    expected = naive_mla(case, w.kv_c, w.k_pe, w.slot_mapping, w.scale)
    rows = w.kv_cache.view(-1, w.kv_cache.shape[-1])
    assert len(expected) == 9  # the last quarter is padding
    for slot in range(case.num_slots):
        got = rows[slot].view(torch.uint8).numpy().tobytes()
        assert got == expected.get(slot, bytes(len(got))), slot


def test_ds_mla_scales_are_powers_of_two_as_vllm_stores_them():
    """vLLM PR 49435's examples: amax 336 -> 0.75 -> stored 1.0; an all-zero tile -> 2**-13 (from 1e-4)."""
    kv_c = torch.zeros(1, 512, dtype=torch.bfloat16)
    kv_c[0, 0] = 336.0
    kv_c[0, 200] = -448.0
    kv_c[0, 300] = 449.0  # rounds to 448 in bf16... 448 < x: scale 2
    scales = mla.ds_mla_tile_scales(kv_c)[0].tolist()
    assert scales[0] == 1.0 and scales[1] == 1.0 and scales[3] == 2.0**-13
    assert scales[2] == (1.0 if float(torch.tensor(449.0, dtype=torch.bfloat16)) <= 448 else 2.0)


def naive_indexer(case, k, slots):
    """{(block, byte offset in the block): byte} for every byte the op writes."""
    out = {}
    bs, d, groups = case.block_size, case.head_dim, case.head_dim // 128
    for t, slot in enumerate(slots.tolist()):
        if slot < 0:
            continue
        block, o = divmod(slot, bs)
        for g in range(groups):
            x = k[t, g * 128:(g + 1) * 128].float()
            u = f32(max(x.abs().max().item(), 1e-4) / 448.0)
            s = u if case.scale_fmt == "fp32" else naive_pow2_at_least(u)
            codes = (x / s).clamp(-448, 448).to(E4M3).view(torch.uint8).tolist()
            for i, byte in enumerate(codes):
                out[(block, o * d + g * 128 + i)] = byte
            if case.scale_fmt == "mxfp8":
                scale_bytes = bytes([struct.unpack("I", struct.pack("f", s))[0] >> 23 & 0xFF] * 4)
            else:
                scale_bytes = struct.pack("f", s)
            for i, byte in enumerate(scale_bytes):
                out[(block, bs * d + 4 * (o * groups + g) + i)] = byte
    return out


@pytest.mark.parametrize("fmt, head_dim", [("ue8m0", 128), ("fp32", 256), ("mxfp8", 128)])
def test_indexer_reference_matches_a_naive_loop_block_major(fmt, head_dim):
    case = indexer.Case(num_tokens=10, num_blocks=2, block_size=16, head_dim=head_dim, scale_fmt=fmt, device="cpu",
                        slots="padded")
    w = ops.workload(case, seed=4)
    w.kv_cache.fill_(0)
    indexer.reference_write(w)
    expected = naive_indexer(case, w.k, w.slot_mapping)
    per_block = w.kv_cache.view(case.num_blocks, -1)
    for block in range(case.num_blocks):
        for offset, byte in enumerate(per_block[block].tolist()):
            assert byte == expected.get((block, offset), 0), (block, offset)


def naive_token_head(kind, x):
    """(codes, scales) of x [heads, head_size], one head at a time."""
    codes, scales = [], []
    qmax = 127.0 if kind == "int8" else 448.0
    for row in x.float():
        s = max(f32(row.abs().max().item() / qmax), 1e-6)
        inv = f32(1.0 / s)
        q = row * inv
        if kind == "int8":
            q = torch.tensor([int(max(-128.0, min(127.0, v + 0.5 if v >= 0 else v - 0.5))) for v in q.tolist()],
                             dtype=torch.int8)
        else:
            q = q.clamp(-448, 448).to(E4M3)
        codes.append(q)
        scales.append(s)
    return torch.stack(codes), torch.tensor(scales)


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_token_head_quant_reference_matches_a_naive_loop(kind):
    case = token_head_quant.Case(num_tokens=6, num_blocks=2, num_heads=3, head_size=64, kv_cache_dtype=kind,
                                 device="cpu", slots="padded")
    w = ops.workload(case, seed=8)
    for t in w.outputs():
        t.view(torch.uint8).fill_(0)
    token_head_quant.reference_write(w)
    for t, slot in enumerate(w.slot_mapping.tolist()):
        if slot < 0:
            continue
        b, o = divmod(slot, case.block_size)
        for x, cache, scales in ((w.key, w.key_cache, w.k_scale_cache), (w.value, w.value_cache, w.v_scale_cache)):
            codes, s = naive_token_head(kind, x[t])
            assert torch.equal(cache[b, o].view(torch.uint8), codes.view(torch.uint8))
            assert torch.equal(scales[b, o], s)


def test_int8_rounds_half_away_from_zero():
    x = torch.tensor([[[127.0, 2.5, -2.5, 0.5, -0.5, 1.49]]])  # scale 1
    codes, scales = token_head_quant.quantize(x, "int8")
    assert scales.item() == 1.0 and codes.tolist() == [[[127, 3, -3, 1, -1, 1]]]


def test_interleaved_v_layout_puts_each_dims_slots_together():
    from kvbench.ops import kv, layouts

    case = kv.Case(num_tokens=1, num_heads=2, head_size=64, num_blocks=2, layout="paged-iv", device="cpu")
    key_cache, value_cache = layouts.allocate(case)
    assert value_cache.shape == (2, 2, 2, 64, 8)  # [blocks, heads, block_size // x, head_size, x]
    value_cache.zero_()
    data = torch.zeros(1, 2, 64, dtype=torch.bfloat16)
    data[0, 1, 5] = 3
    slot = 16 + 11  # block 1, offset 11: group 1, lane 3
    layouts.scatter("paged-iv", "value", value_cache, torch.tensor([slot]), data)
    assert value_cache[1, 1, 1, 5, 3] == 3 and value_cache.float().sum() == 3


def exact_inputs(shape, per, dtype, top=448.0):
    """Values y * 2**-3 with y 0 or a normal e4m3 value, 1 <= |y| <= top, reaching `top` in every group of `per` last
    elements: any power-of-two scale of a group divides them without rounding (and nothing is subnormal)."""
    y = (torch.randn(shape) * 64).clamp(-top, top).to(E4M3).float()
    y = torch.where(y.abs() < 1, torch.zeros_like(y), y)
    y.view(-1, per)[:, 0] = top
    return (y * 0.125).to(dtype)


def exact_mla_workload(kv, num_tokens, num_blocks, seed):
    """An MLA workload (padded slots, block 16) whose inputs divide by its scale 0.125 without rounding."""
    case = make_case("triton", op="mla", num_tokens=num_tokens, num_blocks=num_blocks, block_size=16, device="cpu",
                     slots="padded", kv_cache_dtype=kv)
    w = ops.workload(case, seed=seed)
    w.kv_c.copy_(exact_inputs(w.kv_c.shape, 128, w.kv_c.dtype, top=56.0))
    w.k_pe.copy_(exact_inputs(w.k_pe.shape, 64, w.k_pe.dtype, top=56.0))
    w.scale.fill_(0.125)
    return w


@pytest.mark.parametrize("kv, div, evict", [("fp8", 1, "evict_first"), ("fp8", 0, ""), ("auto", 0, "evict_last"),
                                            ("fp8", 2, "")])
def test_mla_tuning_variants_match_the_reference_in_the_interpreter(kv, div, evict):
    """scripts/tune_triton.py's MLA variants: the Markstein division (DIV 1; 2: the product clamped before its
    correction) and eviction hints write the same rows."""
    from kvbench.impls.kernels.mla import concat_and_cache_mla

    impl = get("triton", "mla")
    w = exact_mla_workload(kv, 40, 8, seed=9)
    write = lambda: concat_and_cache_mla(w.kv_c, w.k_pe, w.kv_cache, w.slot_mapping, kv, w.scale, div=div,
                                         evict=evict)
    assert verify(impl.name, [w], write, impl.compare).method == "bit-exact"


def test_ds_mla_codes_by_the_scales_reciprocal_are_the_quotients_at_extreme_tiles():
    """fp8_ds_mla divides by each tile's power-of-two scale as a product with its reciprocal: the same codes as the
    reference's division for tiles from 2**-16 to 2**118 (the floor scale 2**-13, and 2**116 near the top of bf16's
    range) and all-zero ones (inputs that divide without rounding: the interpreter's fp8 rounding of ties is not the
    GPU's). It guards the scale's exponent and its reciprocal; a product and a quotient agree on such inputs."""
    impl = get("triton", "mla")
    case = make_case("triton", op="mla", num_tokens=24, num_blocks=4, block_size=16, device="cpu", slots="padded",
                     kv_cache_dtype="fp8_ds_mla")
    w = ops.workload(case, seed=5)
    w.kv_c.copy_(exact_inputs(w.kv_c.shape, 128, w.kv_c.dtype))
    tiles = w.kv_c.view(case.num_tokens, 4, 128)
    tiles[:, 0] *= 2.0**118
    tiles[:, 1] *= 2.0**-16
    tiles[:, 2] = 0.0
    assert verify(impl.name, [w], impl.bind(w), impl.compare).method == "bit-exact"


@pytest.mark.parametrize("kv", ["auto", "fp8", "fp8_ds_mla"])
def test_mla_programs_past_the_last_token_store_nothing(kv):
    """23 tokens (padding among them) in programs of 1, 2, 4 and 8 tokens: the last program's rows past the slot
    mapping are neither read nor stored, every token's row is the reference's."""
    from kvbench.impls.kernels.mla import concat_and_cache_mla

    impl = get("triton", "mla")
    w = exact_mla_workload(kv, 23, 4, seed=3)
    for tokens in (1, 2, 4, 8):
        write = lambda: concat_and_cache_mla(w.kv_c, w.k_pe, w.kv_cache, w.slot_mapping, kv, w.scale, tokens=tokens)
        assert verify(impl.name, [w], write, impl.compare).method == "bit-exact", tokens


def test_an_mla_slot_mapping_longer_than_the_rows_is_refused_before_any_launch():
    """The MLA kernel reads every row, padding tokens' too: a slot without its row is a one-line error."""
    from kvbench.impls.kernels.mla import concat_and_cache_mla

    kv_c, k_pe = torch.zeros(3, 512, dtype=torch.bfloat16), torch.zeros(3, 64, dtype=torch.bfloat16)
    cache = torch.zeros(2, 16, 576, dtype=torch.bfloat16)
    slots = torch.tensor([0, 1, 2, -1], dtype=torch.int64)
    with pytest.raises(ValueError, match=r"kv_c and k_pe need a row for each of the 4 slots; they have 3 and 3"):
        concat_and_cache_mla(kv_c, k_pe, cache, slots, "auto", torch.ones(()))


INTERPRETED = [("mla", dict(kv_cache_dtype="auto")), ("mla", dict(kv_cache_dtype="fp8_ds_mla")),
               ("mla", dict(kv_cache_dtype="fp8", skip_scale=True)), ("indexer", dict(scale_fmt="ue8m0")),
               ("indexer", dict(scale_fmt="mxfp8")), ("indexer", dict(scale_fmt="fp32", head_dim=512)), ("token-head-quant", dict(kv_cache_dtype="int8")),
               ("token-head-quant", dict(kv_cache_dtype="fp8"))]


@pytest.mark.parametrize("op, fields", INTERPRETED)
def test_triton_kernels_match_the_reference_in_the_interpreter(op, fields):
    impl = get("triton", op)
    if impl.unavailable_reason("cpu"):
        pytest.skip(impl.unavailable_reason("cpu"))
    case = make_case("triton", op=op, num_tokens=200, num_blocks=16, block_size=16, device="cpu", slots="padded",
                     **fields)  # 200 tokens: several tokens per program (the interpreter counts 4 SMs)
    w = ops.workload(case, seed=5)
    if op == "mla" and case.is_fp8:
        w.kv_c.copy_(exact_inputs(w.kv_c.shape, 128, w.kv_c.dtype, top=56.0 if not case.ds_mla else 448.0))
        w.k_pe.copy_(exact_inputs(w.k_pe.shape, 64, w.k_pe.dtype, top=56.0 if not case.ds_mla else 448.0))
    if op == "indexer":
        w.k.copy_(exact_inputs(w.k.shape, 128, w.k.dtype))
    if op == "token-head-quant" and case.kv_cache_dtype == "fp8":
        w.key.copy_(exact_inputs(w.key.shape, w.key.shape[-1], w.key.dtype))
        w.value.copy_(exact_inputs(w.value.shape, w.value.shape[-1], w.value.dtype))
    result = verify(impl.name, [w], impl.bind(w), impl.compare)
    assert result.tokens_checked == 150 and result.method == "bit-exact"


@pytest.mark.parametrize("op", ["mla", "indexer", "token-head-quant"])
def test_torch_reference_through_prepare_and_the_timed_path(op):
    p = prepare(make_case("torch", op=op, num_tokens=40, num_blocks=8, block_size=16, device="cpu", slots="padded"),
                "torch")
    p.sampler("no_graph").measure(2)
    assert p.check_timed("no_graph").tokens_checked == 30
    assert p.case.bytes_moved > 0


@pytest.mark.parametrize("fields, words", [
    (dict(op="mla", kv_cache_dtype="fp8_ds_mla", kv_lora_rank=256), ["fp8_ds_mla", "kv_lora_rank 512"]),
    (dict(op="mla", kv_cache_dtype="fp8_ds_mla", dtype="float"), ["16-bit input"]),
    (dict(op="mla", block_size=32), ["block_size 32", "16, 64"]),
    (dict(op="indexer", head_dim=100), ["head_dim 100", "multiple of 128"]),
    (dict(op="indexer", scale_fmt="mxfp8", head_dim=256), ["mxfp8", "head_dim 128"]),
    (dict(op="token-head-quant", kv_cache_dtype="auto"), ["kv_cache_dtype 'auto'", "int8, fp8"]),
])
def test_family_cases_validate_in_one_line(fields, words):
    from kvbench.errors import CaseError

    op = fields.pop("op")
    with pytest.raises(CaseError) as exc:
        ops.get(op).Case(num_tokens=2, device="cpu", **fields)
    assert "\n" not in str(exc.value) and all(w in str(exc.value) for w in words), str(exc.value)


GPU_FAMILY = ([("mla", dict(kv_cache_dtype=kv, dtype=dt)) for kv in ("auto", "fp8", "fp8_e5m2")
               for dt in ("half", "bfloat16", "float")]
              + [("mla", dict(kv_cache_dtype="fp8", skip_scale=True)), ("mla", dict(kv_cache_dtype="fp8_ds_mla")),
                 ("mla", dict(kv_cache_dtype="fp8_ds_mla", dtype="half")), ("mla", dict(block_size=16))]
              + [("indexer", dict(scale_fmt=f, dtype=dt)) for f in ("ue8m0", "fp32", "mxfp8")
                 for dt in ("half", "bfloat16", "float")] + [("indexer", dict(head_dim=512, block_size=16))]
              + [("token-head-quant", dict(kv_cache_dtype=kv, dtype=dt)) for kv in ("int8", "fp8")
                 for dt in ("half", "bfloat16", "float")]
              + [("token-head-quant", dict(num_heads=1, head_size=64)), ("token-head-quant", dict(head_size=96))])


@pytest.mark.gpu
@pytest.mark.parametrize("op, fields", GPU_FAMILY)
@pytest.mark.parametrize("num_tokens", [3, 4096])
def test_gpu_family_kernels_are_bit_exact(op, fields, num_tokens):
    case = make_case("triton", op=op, num_tokens=num_tokens, num_blocks=512, slots="padded", **fields)
    p = prepare(case, "triton")
    assert p.verified.method == "bit-exact" and p.verified.tokens_checked == case.valid_tokens


@pytest.mark.gpu
@pytest.mark.parametrize("op", ["mla", "indexer", "token-head-quant"])
def test_gpu_family_65536_tokens_cold(op):
    # a cache with room for a rotation of 4x the L2 (the indexer's default 2048 blocks hold two sets of 65536)
    p = prepare(make_case("triton", op=op, num_tokens=65536, l2="cold", num_blocks=16384), "triton")
    p.sampler("cudagraph").measure(3)
    assert p.check_timed("cudagraph").tokens_checked == 65536 * p.rotation
