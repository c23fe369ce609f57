"""The torch reference against a naive per-token loop, and the fp8 reference against torch's casts."""

import itertools

import pytest
import torch

from kvbench.ops import fp8
from kvbench.ops.kv import Case
from kvbench.ops.layouts import LAYOUTS
from kvbench.ops.kv import reference_write
from kvbench.ops import workload as make


def naive_write(case, key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale):
    """One token at a time, straight from the layout definitions (no shared code with the reference)."""
    bs = case.block_size
    for i, slot in enumerate(slot_mapping.tolist()):
        if slot < 0:
            continue
        b, o = divmod(slot, bs)
        for which, x, scale, cache in (("key", key, k_scale, key_cache), ("value", value, v_scale, value_cache)):
            row = x[i].float()  # [heads, head_size]
            if case.is_fp8:
                s = scale.reshape(-1, 1) if scale.dim() else scale
                limit = torch.finfo(fp8.FORMATS[case.fp8_format]).max
                row = (row / s).clamp(-limit, limit).to(fp8.FORMATS[case.fp8_format]).view(torch.uint8)
            else:
                row = x[i]
            for h in range(case.num_heads):
                if case.layout in ("nhd", "nhd-split", "nhd-packed", "hnd-packed"):  # NHD-shaped views
                    cache[b, o, h] = row[h]
                elif case.layout == "hnd":
                    cache[b, h, o] = row[h]
                elif case.layout == "cpu-vec" and which == "value":
                    cache[b, h, o] = row[h]
                elif case.layout == "cpu-vec":
                    cache[b, h].view(-1)[o::bs] = row[h]  # packed [head_size, block_size]
                elif case.layout == "paged-iv" and which == "value":  # [block_size // x, head_size, x]
                    x_ = 16 // case.cache_element_size
                    cache[b, h, o // x_, :, o % x_] = row[h]
                elif which == "value":  # paged value [head_size, block_size]
                    cache[b, h, :, o] = row[h]
                else:  # paged key [head_size // x, block_size, x]
                    x_ = cache.shape[-1]
                    cache[b, h, :, o, :] = row[h].reshape(-1, x_)


CASES = list(itertools.product(LAYOUTS, ["half", "bfloat16", "float"], ["auto", "fp8", "fp8_e5m2"]))


@pytest.mark.parametrize("layout, dtype, kv", CASES)
def test_reference_matches_naive_loop_with_padding(layout, dtype, kv):
    case = Case(num_tokens=12, num_heads=3, head_size=64, num_blocks=5, layout=layout, dtype=dtype,
                kv_cache_dtype=kv, device="cpu")
    w = make(case, seed=7)
    slots = w.slot_mapping.clone()
    slots[[1, 4, 11]] = -1  # padding tokens
    key = torch.cat([w.key, torch.randn_like(w.key[:3])])  # more key rows than slots: the extra rows are ignored
    value = torch.cat([w.value, torch.randn_like(w.value[:3])])
    expected = [c.clone().fill_(0) for c in (w.key_cache, w.value_cache)]
    got = [c.fill_(0) for c in (w.key_cache, w.value_cache)]
    naive_write(case, key, value, *expected, slots, w.k_scale, w.v_scale)
    reference_write(case, key, value, *got, slots, w.k_scale, w.v_scale)
    for g, e in zip(got, expected):
        assert torch.equal(g.view(torch.uint8), e.view(torch.uint8))
    assert got[0].view(torch.uint8).count_nonzero() > 0


@pytest.mark.parametrize("layout", ["nhd", "hnd"])
def test_reference_per_head_scales(layout):
    case = Case(num_tokens=6, num_heads=4, head_size=64, num_blocks=2, layout=layout, kv_cache_dtype="fp8",
                fp8_scales="head", device="cpu")
    w = make(case, seed=3)
    assert w.k_scale.shape == (4,)
    expected = [c.clone().fill_(0) for c in (w.key_cache, w.value_cache)]
    naive_write(case, w.key, w.value, *expected, w.slot_mapping, w.k_scale, w.v_scale)
    reference_write(case, w.key, w.value, w.key_cache.fill_(0), w.value_cache.fill_(0), w.slot_mapping,
                    w.k_scale, w.v_scale)
    assert torch.equal(w.key_cache, expected[0]) and torch.equal(w.value_cache, expected[1])


def test_reference_all_padding_writes_nothing():
    case = Case(num_tokens=4, num_heads=2, head_size=64, num_blocks=2, device="cpu")
    w = make(case, seed=1)
    before = [c.normal_().clone() for c in (w.key_cache, w.value_cache)]
    reference_write(case, w.key, w.value, w.key_cache, w.value_cache, torch.full((4,), -1), w.k_scale, w.v_scale)
    assert torch.equal(w.key_cache, before[0]) and torch.equal(w.value_cache, before[1])


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_fp8_nearest_is_torchs_cast_and_saturates(fmt):
    dtype = fp8.FORMATS[fmt]
    x = torch.randn(64, 4, 32) * 20
    one = torch.tensor(1.0)
    assert torch.equal(fp8.quantize(x, one, fmt), x.to(dtype).view(torch.uint8))
    big = torch.tensor([[[1e6, -1e6]]])
    limit = torch.finfo(dtype).max
    assert fp8.quantize(big, one, fmt).view(dtype).float().tolist() == [[[limit, -limit]]]


@pytest.mark.parametrize("fmt, per_binade", [("e4m3", 8), ("e5m2", 4)])
def test_fp8_steps_apart_counts_representable_values(fmt, per_binade):
    def code(v):
        return torch.tensor([v]).to(fp8.FORMATS[fmt]).view(torch.uint8)

    assert fp8.steps_apart(code(-0.0), code(0.0)).item() == 0
    assert fp8.steps_apart(code(1.0) + 1, code(1.0)).item() == 1
    assert fp8.steps_apart(code(2.0), code(1.0)).item() == per_binade
    assert fp8.steps_apart(code(-1.0), code(1.0)).item() == 2 * code(1.0).item()


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2"])
def test_fp8_dequantize_inverts_the_scale(fmt):
    x = torch.randn(256, 2, 32) * 10
    scale = torch.tensor(0.5)
    assert torch.allclose(fp8.dequantize(fp8.quantize(x, scale, fmt), scale, fmt), x, rtol=0.25, atol=1e-2)


def test_scales_are_max_abs_over_64():
    x = torch.tensor([[[1.0, -128.0]], [[3.0, 2.0]]])
    assert fp8.scales(x).item() == 2.0 and fp8.scales(x).dtype == torch.float32
    assert fp8.scales(torch.randn(5, 3, 8), per_head=True).shape == (3,)
