"""Experiments behind notes/triton.md, run on a GPU in one call: copy-bandwidth methods, launch-parameter variants
of kvbench's Triton kernel (NHD), and probes of what limits the paged layout's transposed value writes.

Every variant of the real kernel is verified before it is timed; the probes are raw memory-access patterns with
no result to verify (they write junk into scratch buffers) and exist only to measure the hardware.
Usage: PYTHONPATH=src python3 scripts/tune_triton.py
"""

from __future__ import annotations

import statistics

import torch
import triton
import triton.language as tl
from tabulate import tabulate

from kvbench.impls.kernels.cache_write import launch_config, reshape_and_cache
from kvbench.impls.own_triton import TritonWrite
from kvbench.measure.bandwidth import measure_copy
from kvbench.measure.timing import GraphSampler
from kvbench.ops.verify import verify
from kvbench.runner import make_case, prepare


def per_call_us(fn, samples: int = 15) -> float:
    return statistics.median(GraphSampler(fn).measure(samples)) * 1e6


def copy_bandwidths() -> list:
    rows = []
    for label, dtype, nbytes in [("uint8 1 GiB", torch.uint8, 1 << 30), ("int64 1 GiB", torch.int64, 1 << 30),
                                 ("int64 4 GiB", torch.int64, 4 << 30)]:
        src = torch.empty(nbytes // torch.empty((), dtype=dtype).element_size(), dtype=dtype, device="cuda")
        src.view(torch.uint8).random_(0, 256)
        dst = torch.empty_like(src)
        us = per_call_us(lambda: dst.copy_(src))
        rows.append((f"copy_ {label}", f"{us:.1f}", f"{2 * nbytes / us / 1e3:.1f}"))
        del src, dst
    rows.append(("kvbench measure_copy (as cached)", "", f"{measure_copy('cuda') / 1e9:.1f}"))
    return rows


class Variant(TritonWrite):
    """The kernel with overridden launch parameters, through the same verification as `triton`."""

    def __init__(self, overrides):
        self.overrides = overrides

    def bind(self, w):
        args = (w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, w.case.fp8_format, w.k_scale,
                w.v_scale, w.case.layout)
        return lambda: reshape_and_cache(*args, config=self.overrides(w.case))


def kernel_variants(layout: str, tokens: list[int], kv_cache_dtype: str = "auto") -> list:
    variants = {
        "default": lambda c: {},
        "evict_first": lambda c: {"EVICT": "evict_first"},
        "4096 el, 4 warps": lambda c: launch_config(c.num_tokens, c.num_heads, c.head_size, 132, c.is_fp8, 4096, 4),
        "8192 el, 8 warps": lambda c: launch_config(c.num_tokens, c.num_heads, c.head_size, 132, c.is_fp8, 8192, 8),
        "16384 el, 8 warps": lambda c: launch_config(c.num_tokens, c.num_heads, c.head_size, 132, c.is_fp8, 16384, 8),
    }
    rows = []
    for n in tokens:
        p = prepare(make_case("triton", layout, num_tokens=n, kv_cache_dtype=kv_cache_dtype), "triton")
        ideal = p.case.bytes_moved
        for name, overrides in variants.items():
            v = Variant(overrides)
            write = v.bind(p.workload)
            verify("variant", [p.workload], write)
            us = per_call_us(write)
            rows.append((f"{layout} {kv_cache_dtype}", n, name, f"{us:.2f}", f"{ideal / us / 1e3:.1f}"))
        del p
    return rows


@triton.jit
def _sector_rmw_probe(cache_ptr, slot_ptr, value, H: tl.constexpr, D: tl.constexpr, BS: tl.constexpr,
                      BLOCK_H: tl.constexpr):
    """Probe: for one token, read each whole 32-byte row [block, h, d, 0:BS] and write it back with one element set."""
    t = tl.program_id(0)
    slot = tl.load(slot_ptr + t)
    block, off = slot // BS, slot % BS
    h = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    d = tl.arange(0, D)
    o = tl.arange(0, BS)
    ptr = cache_ptr + block * (H * D * BS) + h[:, None, None] * (D * BS) + d[None, :, None] * BS + o[None, None, :]
    row = tl.load(ptr)
    row = tl.where(o[None, None, :] == off, value, row)
    tl.store(ptr, row)


def paged_probes(tokens: list[int]) -> list:
    """Transposed value writes: element-wise partial-sector stores vs whole-sector read-modify-write."""
    rows = []
    nb, h, d, bs = 16384, 128, 128, 16
    cache = torch.empty(nb, h, d, bs, dtype=torch.bfloat16, device="cuda")
    region = cache.view(-1)[: 1 << 28]  # 512 MiB
    rows.append(("fill 512 MiB (whole sectors)", "", f"{per_call_us(lambda: region.fill_(1.0)):.1f}"))
    strided = region.view(-1, bs)[:, 3]
    rows.append(("fill 2 B of every 32 B sector of 512 MiB", "", f"{per_call_us(lambda: strided.fill_(1.0)):.1f}"))
    for n in tokens:
        slots = torch.randperm(nb * bs, device="cuda")[:n]
        fn = lambda: _sector_rmw_probe[(n, h // 8)](cache, slots, 1.0, H=h, D=d, BS=bs, BLOCK_H=8, num_warps=4)
        rows.append((f"value sector RMW probe, {n} tokens", n, f"{per_call_us(fn):.1f}"))
        case = make_case("triton", "paged", num_tokens=n)
        p = prepare(case, "triton")
        rows.append((f"triton paged (key + value), {n} tokens", n, f"{per_call_us(p.write):.1f}"))
        del p
    return rows


def main():
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    print(tabulate(copy_bandwidths(), ["copy", "µs", "GB/s"], tablefmt="github"))
    rows = kernel_variants("nhd", [2, 1024, 4096, 65536]) + kernel_variants("nhd", [1024, 16384], "fp8")
    print(tabulate(rows, ["layout", "tokens", "variant", "µs", "GB/s"], tablefmt="github"))
    print(tabulate(paged_probes([1024, 16384]), ["paged probe", "tokens", "µs"], tablefmt="github"))


if __name__ == "__main__":
    main()
