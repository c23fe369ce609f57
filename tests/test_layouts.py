import pytest
import torch

from kvbench.ops import layouts, slots as slot_patterns
from kvbench.ops.kv import Case
from kvbench.ops.layouts import LAYOUTS


def slot_mapping(case):
    return slot_patterns.slot_sets(case.slots, case.num_tokens, case.num_blocks, case.block_size, case.seed)[0]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype, kv", [("bfloat16", "auto"), ("float", "auto"), ("half", "fp8")])
def test_scatter_then_gather_round_trips(layout, dtype, kv):
    case = Case(num_tokens=10, num_heads=3, head_size=64, num_blocks=4, layout=layout, dtype=dtype,
                kv_cache_dtype=kv, device="cpu")
    key_cache, value_cache = layouts.allocate(case)
    slots = slot_mapping(case)
    assert len(set(slots.tolist())) == 10 and 0 <= min(slots.tolist()) and max(slots.tolist()) < case.num_slots
    for which, cache in (("key", key_cache), ("value", value_cache)):
        data = torch.randint(0, 255, (10, 3, 64), dtype=torch.uint8).to(case.cache_dtype)
        layouts.scatter(layout, which, cache, slots, data)
        assert torch.equal(layouts.gather(layout, which, cache, slots), data)


def test_physical_positions_match_vllms_layouts():
    """One element (token at slot s, head h, dim d) lands where vLLM's kernels put it."""
    case = Case(num_tokens=1, num_heads=2, head_size=64, num_blocks=3, layout="paged", device="cpu")
    s, h, d = 2 * 16 + 5, 1, 19
    block, off = divmod(s, 16)
    data = torch.zeros(1, 2, 64, dtype=torch.bfloat16)
    data[0, h, d] = 7
    slots = torch.tensor([s])
    x = 8  # 16 bytes of bf16
    for layout, expect in [
        ("paged", {"key": lambda k: k[block, h, d // x, off, d % x], "value": lambda v: v[block, h, d, off]}),
        ("nhd", {"key": lambda k: k[block, off, h, d], "value": lambda v: v[block, off, h, d]}),
        ("hnd", {"key": lambda k: k[block, h, off, d], "value": lambda v: v[block, h, off, d]}),
        ("cpu-vec", {"key": lambda k: k[block, h].reshape(64, 16)[d, off], "value": lambda v: v[block, h, off, d]}),
    ]:
        caches = layouts.allocate(case.replace(layout=layout))
        for (which, pick), cache in zip(expect.items(), caches):
            cache.zero_()
            layouts.scatter(layout, which, cache, slots, data)
            assert pick(cache) == 7 and cache.float().sum() == 7, (layout, which)


def test_flash_caches_share_stride0_like_vllms_benchmark():
    k, v = layouts.allocate(Case(num_tokens=1, num_blocks=4, layout="nhd", device="cpu"))
    assert k.stride(0) == v.stride(0) == 2 * 16 * 128 * 128


def test_prefill_slots_fill_consecutive_slots_of_own_blocks():
    from kvbench.ops.slots import PREFILL_SEQ_LEN

    case = Case(num_tokens=PREFILL_SEQ_LEN + 40, num_blocks=100, device="cpu", slots="prefill")
    slots = slot_mapping(case).tolist()
    assert len(set(slots)) == len(slots)
    for start in (0, PREFILL_SEQ_LEN):  # each chunk runs through consecutive offsets of its own blocks
        seq = slots[start : start + PREFILL_SEQ_LEN]
        assert all(b - a == 1 for a, b in zip(seq, seq[1:]) if b % 16)
    assert len(set(s // 16 for s in slots)) <= -(-len(slots) // 16) + 2  # one extra block per chunk at most
    assert slot_mapping(case).tolist() == slots  # fixed seed


def test_decode_slots_use_distinct_blocks():
    case = Case(num_tokens=300, num_blocks=400, device="cpu", slots="decode")
    slots = slot_mapping(case)
    assert len(set((slots // 16).tolist())) == 300 and slots.max() < case.num_slots


@pytest.mark.parametrize("layout, key_strides, value_offset", [
    # vLLM's views as its backends pass them (B blocks, N slots, H heads, D head_size; strides in elements)
    ("nhd-split", lambda B, N, H, D: (N * H * D, H * D, D, 1), lambda B, N, H, D: B * N * H * D),
    ("nhd-packed", lambda B, N, H, D: (N * H * 2 * D, H * 2 * D, 2 * D, 1), lambda B, N, H, D: D),
    ("hnd-packed", lambda B, N, H, D: (H * N * 2 * D, 2 * D, N * 2 * D, 1), lambda B, N, H, D: D),
    ("nhd", lambda B, N, H, D: (2 * N * H * D, H * D, D, 1), lambda B, N, H, D: N * H * D),
])
def test_served_layouts_are_the_views_vllm_passes(layout, key_strides, value_offset):
    dims = (5, 16, 3, 64)
    case = Case(num_tokens=1, num_blocks=dims[0], num_heads=dims[2], head_size=dims[3], layout=layout, device="cpu")
    key, value = layouts.allocate(case)
    assert key.shape == value.shape == (5, 16, 3, 64)
    assert key.stride() == value.stride() == key_strides(*dims)
    assert key.untyped_storage().data_ptr() == value.untyped_storage().data_ptr()  # one allocation
    assert value.storage_offset() - key.storage_offset() == value_offset(*dims)
    assert key.untyped_storage().nbytes() == 2 * 5 * 16 * 3 * 64 * key.element_size()  # nothing else in it
