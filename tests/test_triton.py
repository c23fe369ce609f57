"""kvbench's Triton kernel against the reference: on CPU through TRITON_INTERPRET=1 (small shapes), and on the
GPU (marked `gpu`) at real sizes with random inputs, bit-exact for auto and fp8.

Triton's interpreter (3.9) converts to fp8 wrongly when rounding carries into the exponent (7.95 -> 4.0), so
interpreter tests feed fp8 cases inputs whose x / scale is exactly representable (no rounding happens); the GPU
tests use plain random inputs.
"""

import itertools

import pytest
import torch

from kvbench.errors import VerificationError
from kvbench import impls
from kvbench.ops import fp8
from kvbench.runner import make_case, prepare
from kvbench.ops.verify import verify
from kvbench.ops import workload as make

TRITON = impls.get("triton")


def exact_fp8_inputs(x: torch.Tensor, fmt: str, per_head: bool) -> torch.Tensor:
    """Values y * 2**-2 with y representable in `fmt`, |y| <= 64 and 64 reached (in every head): scale 2**-2."""
    y = (torch.randn(x.shape) * 16).clamp(-64, 64).to(fp8.FORMATS[fmt]).float()
    y[0, :, 0] = 64.0 if per_head else y[0, :, 0]
    y[0, 0, 0] = 64.0
    return (y * 0.25).to(x.dtype)


def interpreter_workload(case, noncontiguous: bool, padding: bool):
    w = make(case, seed=11)
    if noncontiguous:  # key and value as views of one [tokens, 3, heads, head_size] qkv-like tensor
        qkv = torch.randn(case.num_tokens, 3, case.num_heads, case.head_size).to(case.torch_dtype)
        w.key, w.value = qkv[:, 1], qkv[:, 2]
        assert w.key.stride(0) == 3 * case.num_heads * case.head_size
    if case.is_fp8:
        per_head = case.fp8_scales == "head"
        for name in ("key", "value"):
            getattr(w, name).copy_(exact_fp8_inputs(getattr(w, name), case.fp8_format, per_head))
        w.k_scale, w.v_scale = fp8.scales(w.key, per_head), fp8.scales(w.value, per_head)
        assert torch.all(w.k_scale == 0.25)
    if padding:
        w.slot_mapping[1::3] = -1
    return w


MATRIX = [
    (layout, dtype, kv, scales)
    for layout, dtype, kv in itertools.product(TRITON.layouts, ["half", "bfloat16", "float"],
                                               ["auto", "fp8", "fp8_e5m2"])
    for scales in (["tensor", "head"] if kv != "auto" and layout != "paged" else ["tensor"])
]


@pytest.mark.filterwarnings("error::RuntimeWarning")  # (a per-head scale read past the heads divided by garbage)
@pytest.mark.parametrize("layout, dtype, kv, scales", MATRIX)
def test_interpreter_matches_reference(layout, dtype, kv, scales):
    case = make_case("triton", layout, num_tokens=7, num_heads=3, head_size=64, num_blocks=3, dtype=dtype,
                     kv_cache_dtype=kv, fp8_scales=scales, device="cpu")
    w = interpreter_workload(case, noncontiguous=dtype == "half", padding=kv != "fp8_e5m2")
    result = verify(TRITON.name, [w], TRITON.bind(w), TRITON.compare)
    assert result.method == "bit-exact"


@pytest.mark.parametrize("head_size, block_size, layout", [(80, 32, "nhd"), (120, 16, "hnd"), (120, 32, "paged"),
                                                           (192, 16, "paged"), (96, 32, "hnd")])
def test_interpreter_odd_head_sizes_and_block_32(head_size, block_size, layout):
    case = make_case("triton", layout, num_tokens=5, num_heads=2, head_size=head_size, block_size=block_size,
                     num_blocks=2, device="cpu")
    w = interpreter_workload(case, noncontiguous=True, padding=True)
    assert verify(TRITON.name, [w], TRITON.bind(w), TRITON.compare).tokens_checked == 3  # tokens 1 and 4 are padding


# Tuning variants (scripts/tune_triton.py): the paths the defaults replaced: div_rn per element (DIV 0), the slot
# awaited before the loads (LOAD_FIRST off), the paged value stored untransposed (VALUE_T off); and candidates
ONE = dict(TOKENS=1, SORTED=False)
VARIANTS = [("nhd", "fp8", "tensor", dict(DIV=0)), ("hnd", "fp8", "head", dict(DIV=0, LOAD_FIRST=False)),
            ("paged", "auto", "tensor", dict(VALUE_T=False, LOAD_FIRST=False, **ONE)),  # one token a
            ("paged", "fp8_e5m2", "tensor", dict(VALUE_T=False, **ONE)),  # program (the GPU tests' 4096 x 8 heads
            # would take the kernel of several tokens by default)
            ("paged", "auto", "tensor", dict(TOKENS=4)), ("paged", "fp8", "tensor", dict(TOKENS=4, SORTED=True)),
            ("paged", "fp8_e5m2", "tensor", dict(SORTED=True, BLOCK_H=2)),
            ("nhd", "fp8", "head", dict(DIV=2)), ("hnd", "fp8_e5m2", "tensor", dict(DIV=3)),  # the quotient clamped
            ("paged", "fp8", "tensor", dict(DIV=3)),  # before its correction (3: the GPU's store saturates)
            ("paged", "auto", "tensor", dict(TOKENS=4, VALUE_AS_LOADED=1)),  # the value tile stored as loaded
            ("paged", "fp8", "tensor", dict(TOKENS=8, SORTED=True, VALUE_AS_LOADED=1)),
            ("paged", "auto", "tensor", dict(TOKENS=8, VALUE_AS_LOADED=0)),  # transposed (the default: as loaded
            # where a program's tokens follow each other)
            ("paged", "fp8", "tensor", dict(TOKENS=4, HEADS_FASTEST=True)),  # a grid of the same tokens' heads
            ("paged", "auto", "tensor", dict(TOKENS=4, SORTED=True, RUNS_KEPT=False)),  # slot order always
            # the count of slots that follow read by the kernel (RUNS_READ)
            ("paged", "fp8", "tensor", dict(TOKENS=8, SORTED=True, RUNS_KEPT=True, HEADS_FASTEST=True))]
# (TOKENS, SORTED: the paged layout's kernel of several tokens a program, in slot order or not)


@pytest.mark.parametrize("slots", ["prefill", "random"])
@pytest.mark.parametrize("tokens, ordered, heads, lanes, heads_fastest", [
    (8, False, 2, 0, False), (32, True, 1, 2, False), (16, True, 2, 1, False), (8, False, 1, 2, False),
    (16, True, 1, 2, True), (8, False, 2, 0, True)])
def test_interpreter_paged_tokens_kernel(slots, tokens, ordered, heads, lanes, heads_fastest):
    """Several tokens a program, the tokens of one block stored together: consecutive slots (a prefill chunk
    crossing blocks), a count that is no multiple of TOKENS, padding, odd head count and size; the value tile
    transposed, as loaded, or as the program's slots say (VALUE_AS_LOADED 0, 1, 2); the programs in a grid of
    the same tokens' heads (HEADS_FASTEST, 3 heads in 3 or 2 groups)."""
    case = make_case("triton", "paged", num_tokens=37, num_heads=3, head_size=80, num_blocks=8, block_size=16,
                     dtype="bfloat16", slots=slots, device="cpu")
    w = interpreter_workload(case, noncontiguous=True, padding=True)
    writer = variant_writer(w, dict(TOKENS=tokens, SORTED=ordered, BLOCK_H=heads, VALUE_AS_LOADED=lanes,
                                    HEADS_FASTEST=heads_fastest, RUNS_KEPT=ordered and heads_fastest))
    assert verify(TRITON.name, [w], writer, TRITON.compare).tokens_checked == 37 - len(range(1, 37, 3))


@pytest.mark.parametrize("slots, follows", [
    ([5, 6, 7, 16, 17, 40, 41, 42], 6),  # prefill chunks: 6 and 7 follow 5, 17 follows 16, 16 begins a block...
    ([40, 41, -1, 5, 6, 7, 8, 9], 5),  # a padding token among them
    ([9, 3, 30, 17, 44, 2, 60, 11], 0),  # random
    ([5, 6, 30, 2, 44, 45, 60, 11], 2),  # two of seven follow
    ([7], 0),  # one token
    (list(range(3000, 0, -1)), 187),  # several programs of _order_keys_kernel: only the block starts count
])
def test_interpreter_slot_order_groups_blocks_and_counts_runs(slots, follows):
    """_slot_order (one Triton kernel and a stable sort of narrow keys): the tokens grouped by block, each block's in
    token order, and the count of slots that follow their predecessor's or begin a block (block size 16), which
    the paged kernel compares with half the tokens (RUNS_READ)."""
    from kvbench.impls.kernels.cache_write import _slot_order

    s = torch.tensor(slots, dtype=torch.int64)
    for num_blocks, key_dtype in ((256, torch.int16), (1 << 16, torch.int32)):
        order, runs = _slot_order(s, 16, num_blocks, runs_kept=True)
        blocks = torch.where(s >= 0, s // 16, -1)
        assert torch.equal(order, torch.argsort(blocks, stable=True)), key_dtype
        assert runs.tolist() == [follows]
    assert torch.equal(_slot_order(s, 16, 256, runs_kept=False)[0], order)  # (no count: nothing to read but the
    # order)


@pytest.mark.parametrize("slots, token_order", [("prefill", True), ("random", False)])
def test_interpreter_paged_kernel_in_slot_order_keeps_a_prefill_batchs_token_order(slots, token_order):
    """The sorted path end to end with RUNS_KEPT: a prefill batch (chunks continuing sequences mid-block, their
    blocks in no order) is taken in token order through the ordered kernel, random slots by block; both
    bit-exact, heads fastest, 3 heads of 80 in groups of 2; and both in slot order always (RUNS_KEPT off)."""
    from kvbench.impls.kernels.cache_write import _slot_order

    case = make_case("triton", "paged", num_tokens=45, num_heads=3, head_size=80, num_blocks=16, block_size=16,
                     dtype="bfloat16", slots=slots, device="cpu")
    w = interpreter_workload(case, noncontiguous=True, padding=False)
    assert (_slot_order(w.slot_mapping, 16, 16, runs_kept=True)[1].item() * 2 >= 44) == token_order
    assert not torch.equal(_slot_order(w.slot_mapping, 16, 16, True)[0], torch.arange(45))  # (the order by block
    # would reorder both)
    for runs_kept in (True, False):  # the count read by the kernel (RUNS_READ), or slot order always
        writer = variant_writer(w, dict(TOKENS=8, SORTED=True, BLOCK_H=2, RUNS_KEPT=runs_kept, HEADS_FASTEST=True,
                                        VALUE_AS_LOADED=2))
        assert verify(TRITON.name, [w], writer, TRITON.compare).tokens_checked == 45


@pytest.mark.parametrize("follows, token_order", [(22, True), (21, False)])
def test_interpreter_paged_kernel_takes_token_order_where_the_count_says(monkeypatch, follows, token_order):
    """The kernel's choice itself (RUNS_READ): given an order that names token 0 for every token, it writes every
    token right only where the count of slots that follow is at least half of the 44 that could (then the order
    is not taken); below, only token 0 is written."""
    from kvbench.impls.kernels import cache_write

    case = make_case("triton", "paged", num_tokens=45, num_heads=3, head_size=80, num_blocks=16, block_size=16,
                     dtype="bfloat16", slots="random", device="cpu")
    w = interpreter_workload(case, noncontiguous=False, padding=False)
    asked = []

    def slot_order(s, block_size, num_blocks, runs_kept):
        asked.append(runs_kept)
        return torch.zeros_like(s), torch.tensor([follows], dtype=torch.int32)

    monkeypatch.setattr(cache_write, "_slot_order", slot_order)
    writer = variant_writer(w, dict(TOKENS=8, SORTED=True, RUNS_KEPT=True, VALUE_AS_LOADED=2))
    if token_order:
        assert verify(TRITON.name, [w], writer, TRITON.compare).tokens_checked == 45
    else:
        with pytest.raises(VerificationError, match="tokens 1–44 of 45 never written"):
            verify(TRITON.name, [w], writer, TRITON.compare)
    assert asked and all(asked)  # (the count was asked for: the kernel reads it)


@pytest.mark.parametrize("slots", ["prefill", "random"])
def test_interpreter_paged_kernel_in_slot_order_writes_one_token(slots):
    """One token in slot order, its count kept (num_tokens - 1 = 0: a constant in the build): written right."""
    case = make_case("triton", "paged", num_tokens=1, num_heads=3, head_size=80, num_blocks=4, block_size=16,
                     dtype="bfloat16", slots=slots, device="cpu")
    w = interpreter_workload(case, noncontiguous=False, padding=False)
    writer = variant_writer(w, dict(TOKENS=8, SORTED=True, RUNS_KEPT=True, HEADS_FASTEST=True))
    assert verify(TRITON.name, [w], writer, TRITON.compare).tokens_checked == 1


@pytest.mark.gpu
@pytest.mark.parametrize("slots", ["prefill", "random"])
def test_gpu_paged_slot_order_is_chosen_without_a_host_synchronisation(slots):
    """The paged kernel's order (by block, or token order for a prefill batch) is decided on the GPU: nothing in a
    call in slot order waits for the host, so it can be captured in a CUDA graph (torch's sync debug mode raises on
    a synchronising call)."""
    case = make_case("triton", "paged", num_tokens=4096, num_heads=8, head_size=128, num_blocks=4096,
                     dtype="bfloat16", slots=slots)
    w = make(case, seed=3)
    from kvbench.impls.kernels.cache_write import launch_config

    config = {**launch_config(4096, 8, 128, 132, paged=True), "SORTED": True, "RUNS_KEPT": True,
              "HEADS_FASTEST": True}
    assert verify(TRITON.name, [w], variant_writer(w, config), TRITON.compare).method == "bit-exact"  # (compiled)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        variant_writer(w, config)()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()


def _follow_probe():
    """A one-program kernel storing _follow_each_other of its slots (made here: Triton resolves a kernel's names in
    its module's globals, so the helper is imported at module level for it)."""
    import triton
    import triton.language as tl

    global _follow_each_other
    from kvbench.impls.kernels.cache_write import _follow_each_other

    @triton.jit
    def probe(slot_ptr, out_ptr, BLOCK_SIZE: tl.constexpr, TOKENS: tl.constexpr):
        slot = tl.load(slot_ptr + tl.arange(0, TOKENS))
        tl.store(out_ptr, _follow_each_other(slot, BLOCK_SIZE, TOKENS).to(tl.int32))

    return probe


@pytest.mark.parametrize("slots, expected", [
    ([5, 6, 7, 8], True),  # consecutive in one block
    ([14, 15, 32, 33], True),  # a prefill chunk moving on to another block at offset 0
    ([-1, 6, -1, 8], True),  # padding among them (its slots' places kept)
    ([-1, -1, 40, 41], True),  # padding first, as slot order puts it
    ([-1, -1, -1, -1], True),  # nothing to store: either store writes nothing
    ([5, 6, 8, 9], False),  # a gap
    ([3, 19, 35, 51], False),  # the same offset in four blocks
    ([100, 7, 60, 23], False),  # random
    ([(1 << 40) + 3, (1 << 40) + 4, (1 << 40) + 5, (1 << 40) + 6], True),  # int64 slots past 2**32
])
def test_a_paged_program_stores_its_value_tile_as_loaded_where_its_tokens_follow_each_other(slots, expected):
    """VALUE_AS_LOADED 2's choice (either store is right; this one decides the speed), in Triton's interpreter."""
    out = torch.full((1,), -1, dtype=torch.int32)
    _follow_probe()[(1,)](torch.tensor(slots, dtype=torch.int64), out, BLOCK_SIZE=16, TOKENS=4)
    assert out.item() == int(expected)


def test_the_paged_tokens_kernel_by_the_default_heuristic():
    """512 tokens of one head: 16 programs of 32 tokens, the 4 a simulated SM needs: the default takes the kernel."""
    from kvbench.impls.kernels.cache_write import launch_config

    case = make_case("triton", "paged", num_tokens=512, num_heads=1, head_size=64, num_blocks=64, block_size=16,
                     dtype="half", slots="prefill", device="cpu")
    assert launch_config(512, 1, 64, 4, paged=True)["TOKENS"] == 32
    w = interpreter_workload(case, noncontiguous=True, padding=True)
    assert verify(TRITON.name, [w], TRITON.bind(w), TRITON.compare).tokens_checked == 512 - len(range(1, 512, 3))


def test_the_paged_kernels_launch_parameters_are_refused_where_they_do_not_apply():
    case = make_case("triton", "nhd", num_tokens=4, num_heads=2, head_size=64, num_blocks=2, device="cpu")
    w = make(case, seed=1)
    with pytest.raises(ValueError, match="TOKENS 4 and SORTED False are for the paged layout, not 'nhd'"):
        variant_writer(w, dict(TOKENS=4))()
    paged = make(make_case("triton", "paged", num_tokens=4, num_heads=2, head_size=64, num_blocks=2, device="cpu"), 1)
    with pytest.raises(ValueError, match="VALUE_T apply to one token a program; with TOKENS 4"):
        variant_writer(paged, dict(TOKENS=4, VALUE_T=False))()
    from kvbench.impls.kernels.cache_write import launch_config  # its whole dict, as scripts/tune_triton.py passes
    variant_writer(paged, {**launch_config(4, 2, 64, 4, paged=True), "TOKENS": 4})()  # it, is taken
    variant_writer(paged, launch_config(1024, 2, 64, 4, fp8=True, paged=True))()  # an fp8 grid of 4 programs
    # per SM or more, whose one-token programs would await the slot: the kernel of several tokens loads first
    with pytest.raises(ValueError, match=r"VALUE_AS_LOADED 3 is not one of 0 \(never\), 1 \(always\), 2"):
        variant_writer(paged, dict(TOKENS=4, VALUE_AS_LOADED=3))()
    with pytest.raises(ValueError, match="VALUE_AS_LOADED applies to the paged kernel of several tokens"):
        variant_writer(paged, dict(TOKENS=1, SORTED=False, VALUE_AS_LOADED=True))()
    with pytest.raises(ValueError, match="HEADS_FASTEST applies to the paged kernel of several tokens"):
        variant_writer(paged, dict(TOKENS=1, SORTED=False, HEADS_FASTEST=True))()
    with pytest.raises(ValueError, match="RUNS_KEPT applies to the paged kernel of several tokens"):
        variant_writer(paged, dict(TOKENS=1, SORTED=False, RUNS_KEPT=True))()
    with pytest.raises(ValueError, match=r"power-of-two TOKENS \(not 6\)"):
        variant_writer(paged, dict(TOKENS=6))()
    paged.k_scale = torch.ones(2)
    with pytest.raises(ValueError, match=r"per-tensor scales \(not 2 values\)"):
        variant_writer(paged, dict(TOKENS=4))()
    slots = paged.slot_mapping
    paged.slot_mapping = slots.int()
    with pytest.raises(ValueError, match="slot_mapping must be int64, not torch.int32"):
        variant_writer(paged, {})()
    paged.slot_mapping = torch.stack([slots, slots], 1)[:, 0]  # every other element of a buffer: the kernels read
    with pytest.raises(ValueError, match=r"slot_mapping must be one contiguous dimension, not shape \(\d+,\) "
                                         r"strides \(2,\)"):  # slots one after another
        variant_writer(paged, {})()


def test_a_paged_key_cache_whose_chunks_do_not_follow_each_other_is_refused():
    """The kernels store the key's x-chunks as 16-byte vectors at slot stride x: another stride is a one-line error."""
    case = make_case("triton", "paged", num_tokens=4, num_heads=2, head_size=64, num_blocks=2, device="cpu")
    w = make(case, seed=1)
    wide = torch.zeros(*w.key_cache.shape[:4], 2 * w.key_cache.shape[4], dtype=w.key_cache.dtype)
    w.key_cache = wide[..., :w.key_cache.shape[4]]
    with pytest.raises(ValueError, match=r"x-chunks must be contiguous .* \(16, 1\); expected \(8, 1\)"):
        variant_writer(w, {})()


def variant_writer(w, config):
    from kvbench.impls.kernels.cache_write import reshape_and_cache

    return lambda: reshape_and_cache(w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, w.case.fp8_format,
                                     w.k_scale, w.v_scale, w.case.layout, config=config)


try:  # a kernel of the test's own around divide_rn (Triton resolves the names a kernel calls in its module)
    import triton
    import triton.language as tl

    from kvbench.impls.kernels.cache_write import _fp8_values, divide_rn

    @triton.jit
    def _quotient(x_ptr, s_ptr, out_ptr, N: tl.constexpr, DIV: tl.constexpr):
        rows, cols = tl.arange(0, 8)[:, None], tl.arange(0, N)[None, :]
        x = tl.load(x_ptr + rows * N + cols)
        tl.store(out_ptr + rows * N + cols, divide_rn(x, tl.load(s_ptr + rows), DIV))

    @triton.jit
    def _saturated(x_ptr, s_ptr, out_ptr, N: tl.constexpr, FP8: tl.constexpr, DIV: tl.constexpr):
        rows, cols = tl.arange(0, 8)[:, None], tl.arange(0, N)[None, :]
        x = tl.load(x_ptr + rows * N + cols)
        tl.store(out_ptr + rows * N + cols, _fp8_values(x, tl.load(s_ptr + rows), FP8, DIV))
except ImportError:
    _quotient = _saturated = None


@pytest.mark.skipif(_quotient is None, reason="triton not installed")
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the deliberate 3e38 / 0.5
def test_markstein_division_is_ieee_division_in_the_interpreter():
    """DIV 1's reciprocal-and-correction quotient equals IEEE x / scale bit for bit on random float32 pairs (scales
    that are not powers of two, one per row), keeps an overflowing quotient infinite and the sign of a zero."""
    gen = torch.Generator().manual_seed(3)
    for trial in range(20):
        x = torch.randn(8, 256, generator=gen) * 10.0 ** torch.randint(-3, 4, (8, 1), generator=gen)
        s = torch.rand(8, 1, generator=gen) * 10 + 1e-3
        if trial == 0:
            x[0, 0], s[0, 0] = 3e38, 0.5  # x / scale overflows
            x[1, :3] = torch.tensor([-0.0, 0.0, -1e-40])  # -0 / s is -0 (the correction alone made it +0)
        if trial == 1:
            s[2, 0] = float("inf")  # x / inf is +-0 (the reciprocal made of scale * 0 + 1 was NaN)
        got = torch.empty_like(x)
        _quotient[(1,)](x, s.flatten().contiguous(), got, N=256, DIV=1)
        assert torch.equal(got.view(torch.int32), (x / s).view(torch.int32)), trial


@pytest.mark.skipif(_saturated is None, reason="triton not installed")
@pytest.mark.parametrize("fp8, limit", [(1, 448.0), (2, 57344.0)])
@pytest.mark.parametrize("div", [1, 2])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the products past float32's range
def test_saturated_quotient_in_the_interpreter(fp8, limit, div):
    """The value each fp8 write converts, clamp(x / scale, -max, max), bit for bit from DIV 1 (the division, then
    the clamp) and DIV 2 (the product clamped before its correction): random quotients inside and past the range,
    the range's ends, signed zeros, underflow, infinite inputs, and NaN kept."""
    for seed in (5, 6, 7):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(8, 256, generator=gen) * 10.0 ** torch.randint(-3, 6, (8, 1), generator=gen)
        s = 2.0 ** (torch.rand(8, 1, generator=gen) * 40 - 20)  # scales from 2**-20 to 2**20
        s[0, 0] = 0.5
        x[0, :10] = torch.tensor([-0.0, 0.0, -1e-40, 1e-40, float("inf"), -float("inf"), float("nan"), limit * 0.5,
                                  -limit * 0.5, limit * 0.5 * (1 + 2**-23)])
        got = torch.empty_like(x)
        _saturated[(1,)](x, s.flatten().contiguous(), got, N=256, FP8=fp8, DIV=div)
        want = torch.clamp(x / s, -limit, limit)
        nan = want.isnan()
        assert torch.equal(got.isnan(), nan), seed
        assert torch.equal(got[~nan].view(torch.int32), want[~nan].view(torch.int32)), seed
        if div == 2:  # DIV 3 is DIV 2 but for the last clamp, which the GPU's conversion does
            unclamped = torch.empty_like(x)
            _saturated[(1,)](x, s.flatten().contiguous(), unclamped, N=256, FP8=fp8, DIV=3)
            assert torch.equal(torch.clamp(unclamped, -limit, limit)[~nan].view(torch.int32),
                               got[~nan].view(torch.int32)), seed


@pytest.mark.parametrize("kv", ["fp8", "fp8_e5m2"])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the deliberate -3e38 / 0.25
def test_interpreter_runs_div_2_for_div_3(kv):
    """DIV 3 leaves the saturation to the GPU's conversion, which Triton's interpreter's does not do: on CPU the
    launcher runs DIV 2, so quotients past the format still write its largest code."""
    case = make_case("triton", "nhd", num_tokens=7, num_heads=3, head_size=64, num_blocks=3, dtype="bfloat16",
                     kv_cache_dtype=kv, device="cpu")
    w = interpreter_workload(case, noncontiguous=False, padding=False)
    for x in (w.key, w.value):  # the scales stay 0.25: quotients of 1024, 2**22 and past float32's range
        x[:, :, :4] = torch.tensor([256.0, -256.0, 2.0**20, -3e38])
    assert verify(TRITON.name, [w], variant_writer(w, dict(DIV=3)), TRITON.compare).method == "bit-exact"


@pytest.mark.parametrize("layout, kv, scales, config", VARIANTS)
def test_interpreter_tuning_variants_match_reference(layout, kv, scales, config):
    case = make_case("triton", layout, num_tokens=7, num_heads=3, head_size=64, num_blocks=3, dtype="bfloat16",
                     kv_cache_dtype=kv, fp8_scales=scales, device="cpu")
    w = interpreter_workload(case, noncontiguous=True, padding=True)
    assert verify(TRITON.name, [w], variant_writer(w, config), TRITON.compare).method == "bit-exact"


def test_launch_heuristic():
    from kvbench.impls.kernels.cache_write import launch_config

    assert launch_config(65536, 128, 128, 132) == dict(BLOCK_H=16, BLOCK_D=128, num_warps=2, EVICT="", DIV=3,
                                                       VALUE_T=False, LOAD_FIRST=True, TOKENS=1, SORTED=False)
    assert launch_config(256, 128, 128, 132)["BLOCK_H"] == 16  # 2048 programs: at least 4 per SM (528)
    assert launch_config(32, 128, 128, 132)["BLOCK_H"] == 8  # 256 programs were too few: halved once, to 1024
    # elements, no further (512 programs: a small batch)
    assert launch_config(65536, 128, 128, 132, fp8=True) == dict(BLOCK_H=32, BLOCK_D=128, num_warps=4,
                                                                 EVICT="evict_first", DIV=3, VALUE_T=False,
                                                                 LOAD_FIRST=False, TOKENS=1, SORTED=False)
    small = launch_config(2, 128, 128, 132)
    assert small["BLOCK_H"] == 8 and small["num_warps"] == 4  # 32 programs of 1024 elements for 2 tokens, 4 warps
    assert small["LOAD_FIRST"]  # a small batch's programs load their rows before their slot is known
    assert not launch_config(64, 128, 128, 132, fp8=True)["LOAD_FIRST"]  # 1024 fp8 programs: the slot first
    assert launch_config(64, 128, 128, 132)["LOAD_FIRST"]  # bf16: the rows first in every grid
    assert launch_config(64, 128, 128, 132, fp8=True, paged=True)["LOAD_FIRST"]  # and the paged layout
    for fp8, heads, size in ((False, 4, 128), (True, 1, 128), (True, 4, 128), (True, 8, 128), (True, 8, 64)):
        # a decode batch: whole tokens (64 programs), 4 warps each and no eviction hint, fp8 too (until 2026-12-06
        # an fp8 one kept evict_first, with 8 warps under 1024 elements a token: its time jumped between two levels)
        decode = launch_config(64, heads, size, 132, fp8=fp8)
        assert (decode["BLOCK_H"], decode["num_warps"], decode["EVICT"]) == (heads, 4, "")
    assert launch_config(512, 8, 128, 132, fp8=True)["EVICT"] == ""  # 512 programs: still a small batch
    paged_decode = launch_config(64, 8, 128, 132, fp8=True, paged=True)  # the paged layout's decode batches keep
    # the warps and the hint they were timed with
    assert (paged_decode["num_warps"], paged_decode["EVICT"]) == (4, "evict_first")
    big_decode = launch_config(64, 128, 128, 132, fp8=True)  # 1024 programs of 1024 elements: enough, 4 warps,
    # the fp8 eviction hint of large grids (alike without it here: 2.45-2.48 us against 2.44-2.58, H100)
    assert (big_decode["BLOCK_H"], big_decode["num_warps"], big_decode["EVICT"]) == (8, 4, "evict_first")
    assert launch_config(64, 8, 128, 132, max_warps=2)["num_warps"] == 2  # a tuning variant's warps hold
    assert launch_config(64, 8, 128, 132, max_warps=8)["num_warps"] == 8
    assert launch_config(64, 8, 128, 132, paged=True)["VALUE_T"]  # a paged decode batch: a token a program, its
    # value stored transposed
    paged = [launch_config(n, 8, 128, 132, paged=True) for n in (2048, 4096, 65536)]
    assert [(c["TOKENS"], c["BLOCK_H"], c["num_warps"], c["SORTED"]) for c in paged] == [
        (1, 8, 1, False), (32, 1, 4, False), (32, 1, 4, True)]  # 2048: 512 programs of 32 tokens, too few; 65536
    # tokens: 2**26 elements, slot order, a grid of the same tokens' heads next, token order kept for prefill chunks
    assert [(c.get("HEADS_FASTEST"), c.get("RUNS_KEPT")) for c in paged] == [(None, None), (False, True), (True, True)]
    assert launch_config(65536, 8, 128, 132, fp8=True, paged=True)["EVICT"] == ""  # the paged programs: no
    # eviction hint, fp8 too
    prefill = launch_config(8192, 4, 128, 132, fp8=True)  # 512-element fp8 programs: a warp per 256 elements
    assert (prefill["BLOCK_H"], prefill["num_warps"]) == (4, 2)
    assert launch_config(16, 32, 80, 132)["BLOCK_D"] == 128


GPU_MATRIX = list(itertools.product(TRITON.layouts, ["half", "bfloat16", "float"],
                                    ["auto", "fp8", "fp8_e5m2"]))


@pytest.mark.gpu
@pytest.mark.parametrize("layout, dtype, kv", GPU_MATRIX)
@pytest.mark.parametrize("num_tokens", [3, 4096])
def test_gpu_matches_reference_bit_exact(layout, dtype, kv, num_tokens):
    case = make_case("triton", layout, num_tokens=num_tokens, num_blocks=4096, dtype=dtype, kv_cache_dtype=kv)
    p = prepare(case, "triton")
    assert p.verified.method == "bit-exact" and p.verified.tokens_checked == num_tokens


@pytest.mark.gpu
@pytest.mark.parametrize("layout", ["nhd", "paged"])
def test_gpu_65536_tokens_default_shape(layout):
    case = make_case("triton", layout, num_tokens=65536, kv_cache_dtype="fp8")
    assert prepare(case, "triton").verified.tokens_checked == 65536


@pytest.mark.gpu
@pytest.mark.parametrize("head_size, block_size, layout, scales", [
    (80, 32, "nhd", "head"), (120, 16, "hnd", "tensor"), (112, 32, "paged", "tensor"), (192, 16, "hnd", "head"),
    (256, 32, "paged", "tensor")])
def test_gpu_shapes_noncontiguous_padding_per_head(head_size, block_size, layout, scales):
    kv = "fp8" if head_size % 16 == 0 else "auto"
    case = make_case("triton", layout, num_tokens=1000, num_heads=8, head_size=head_size, block_size=block_size,
                     num_blocks=256, kv_cache_dtype=kv, fp8_scales=scales if kv != "auto" else "tensor")
    w = make(case, seed=5)
    qkv = torch.randn(1000, 3, 8, head_size, device="cuda", dtype=case.torch_dtype)
    w.key, w.value = qkv[:, 1], qkv[:, 2]
    if case.is_fp8:
        per_head = case.fp8_scales == "head"
        w.k_scale, w.v_scale = fp8.scales(w.key, per_head), fp8.scales(w.value, per_head)
    w.slot_mapping[::7] = -1
    assert verify(TRITON.name, [w], TRITON.bind(w), TRITON.compare).tokens_checked == 1000 - len(range(0, 1000, 7))


SPECIAL = [float("nan"), float("inf"), -float("inf"), 1e30, -1e30, 0.0, -0.0, -1e-30, 1e-30, 224.0, -224.0, 232.0,
           28672.0, -30000.0]  # (at scale 0.5: e4m3's largest, between it and the midpoint above, e5m2's largest)


def _with_special_values(*tensors):
    """SPECIAL written over up to 4096 random elements of each tensor (a quarter of a small one)."""
    for x in tensors:
        flat = x.view(-1)
        n = min(4096, flat.numel() // 4)
        at = torch.randint(0, flat.numel(), (n,), generator=torch.Generator().manual_seed(1)).to(flat.device)
        flat[at] = torch.tensor(SPECIAL, dtype=x.dtype).repeat(1 + n // len(SPECIAL))[:n].to(x.device)


@pytest.mark.gpu
@pytest.mark.parametrize("layout, tokens", [("nhd", None), ("paged", 1), ("paged", 32)])
@pytest.mark.parametrize("kv", ["fp8", "fp8_e5m2"])
@pytest.mark.parametrize("div", [None, 1, 2, 3])
def test_gpu_special_values_as_the_reference(layout, tokens, kv, div):
    """NaN stays NaN, infinities and values past the format saturate, signed zeros and underflow keep their sign,
    as the reference's clamp and cast: the hardware's saturating conversion and the kernel's own clamp agree; the
    default division and each of DIV 1-3 (3: the conversion alone saturates)."""
    case = make_case("triton", layout, num_tokens=512, num_blocks=256, num_heads=8, kv_cache_dtype=kv,
                     slots="random")
    w = make(case, seed=23)
    _with_special_values(w.key, w.value)
    w.k_scale.fill_(0.5)
    w.v_scale.fill_(0.5)
    config = ({} if tokens is None else dict(TOKENS=tokens, SORTED=False)) | ({} if div is None else dict(DIV=div))
    writer = variant_writer(w, config) if config else TRITON.bind(w)
    assert verify(TRITON.name, [w], writer, TRITON.compare).method == "bit-exact"


@pytest.mark.gpu
@pytest.mark.parametrize("op, fields", [("mla", dict(kv_cache_dtype="fp8")), ("mla", dict(kv_cache_dtype="fp8_e5m2")),
                                        ("mla", dict(kv_cache_dtype="fp8", div=2)),
                                        ("mla", dict(kv_cache_dtype="fp8_e5m2", div=2)),
                                        ("convert-fp8", dict(direction="quantize", dtype="float"))])
def test_gpu_special_values_as_the_reference_mla_and_convert(op, fields):
    """As test_gpu_special_values_as_the_reference for the MLA write (per-tensor scale) and convert-fp8's quantize
    (fp8_ds_mla is not: a NaN in a tile makes the reference's tile scale NaN, which its kernel does not follow)."""
    from kvbench.impls.kernels.mla import concat_and_cache_mla

    impl = impls.get("triton", op)
    fields = dict(fields)
    div = fields.pop("div", None)  # the MLA kernel's division (2: the product clamped before its correction)
    w = make(make_case("triton", op=op, num_tokens=512, num_blocks=64, **fields), seed=29)
    _with_special_values(*([w.kv_c, w.k_pe] if op == "mla" else [w.src]))
    w.scale.fill_(0.5)
    writer = impl.bind(w) if div is None else lambda: concat_and_cache_mla(
        w.kv_c, w.k_pe, w.kv_cache, w.slot_mapping, w.case.kv_cache_dtype, w.scale, div=div)
    assert verify(impl.name, [w], writer, impl.compare).method == "bit-exact"


@pytest.mark.gpu
@pytest.mark.parametrize("layout, kv, scales, config", VARIANTS)
def test_gpu_tuning_variants_bit_exact_on_random_inputs(layout, kv, scales, config):
    case = make_case("triton", layout, num_tokens=4096, num_blocks=4096, num_heads=8, kv_cache_dtype=kv,
                     fp8_scales=scales)
    w = make(case, seed=17)
    assert verify(TRITON.name, [w], variant_writer(w, config), TRITON.compare).method == "bit-exact"


def test_a_slot_mapping_longer_than_the_inputs_is_refused_before_any_launch():
    """Every input row is read, padding tokens' too (LOAD_FIRST): a slot without its row is a one-line error."""
    from kvbench.impls.kernels.cache_write import reshape_and_cache

    key = torch.zeros(3, 2, 64, dtype=torch.bfloat16)
    cache = torch.zeros(4, 16, 2, 64, dtype=torch.bfloat16)
    slots = torch.tensor([0, 1, -1, -1], dtype=torch.int64)
    with pytest.raises(ValueError, match=r"key and value need a row for each of the 4 slots; they have 3 and 3"):
        reshape_and_cache(key, key, cache, cache, slots, None, torch.ones(()), torch.ones(()), "nhd")
