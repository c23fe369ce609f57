"""Launch-parameter variants of kvbench's Triton kernels on a GPU, each verified before it is timed: the flash write
(auto and fp8), the MLA write and the indexer write, at large token counts, warm and cold L2. The defaults in
kvbench.impls.kernels come from these tables (notes/triton.md).

Usage (GPU machine): PYTHONPATH=src python3 scripts/tune_triton.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import triton
from tabulate import tabulate

from kvbench.impls.kernels import cache_write, indexer, mla
from kvbench.measure import bandwidth
from kvbench.measure.timing import GraphSampler
from kvbench.ops.verify import verify
from kvbench.runner import _round_robin, make_case, prepare


def timed(p, bind, samples: int = 15) -> float:
    """Verify a variant writer on the prepared case's workloads (all of a cold rotation), then its per-call µs."""
    writers = [bind(w) for w in p.workloads]
    write = writers[0] if len(writers) == 1 else _round_robin(writers)
    verify("variant", p.workloads[:1], writers[0], "exact")
    return statistics.median(GraphSampler(write, min_calls=p.rotation).measure(samples)) * 1e6


def flash_variants(p):
    sm = torch.cuda.get_device_properties(0).multi_processor_count
    c = p.case
    out = {"default": {}}
    for elements, warps in ((2048, 2), (4096, 4), (4096, 8), (8192, 4), (8192, 8), (16384, 8), (16384, 16)):
        out[f"{elements} el/{warps} w"] = cache_write.launch_config(c.num_tokens, c.num_heads, c.head_size, sm,
                                                                    c.is_fp8, elements, warps)
    for elements, warps in ((1024, 1), (2048, 2), (2048, 4), (4096, 4)):
        cfg = cache_write.launch_config(c.num_tokens, c.num_heads, c.head_size, sm, c.is_fp8, elements, warps)
        out[f"{elements} el/{warps} w, evict_first"] = {**cfg, "EVICT": "evict_first"}
        out[f"{elements} el/{warps} w, cached"] = {**cfg, "EVICT": ""}
    return {name: (lambda w, cfg=cfg: lambda: cache_write.reshape_and_cache(
        w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, w.case.fp8_format, w.k_scale, w.v_scale,
        w.case.layout, config=cfg)) for name, cfg in out.items()}


def mla_variants(p):
    out = {}
    for tokens in (1, 2, 4, 8, 16):
        for warps in (2, 4, 8):
            out[f"{tokens} tok/{warps} w"] = (lambda w, t=tokens, n=warps: lambda: mla.concat_and_cache_mla(
                w.kv_c, w.k_pe, w.kv_cache, w.slot_mapping, w.case.kv_cache_dtype, w.scale, w.case.skip_scale,
                tokens=t, num_warps=n))
    return out


def indexer_variants(p):
    out = {}
    for tokens in (1, 2, 4, 8, 16):
        for warps in (1, 2, 4):
            out[f"{tokens} tok/{warps} w"] = (lambda w, t=tokens, n=warps: lambda: indexer.indexer_k_quant_and_cache(
                w.k, w.kv_cache, w.slot_mapping, w.case.scale_fmt, tokens=t, num_warps=n))
    return out


def table(title, cases, variants, bw):
    rows = []
    for case in cases:
        p = prepare(case, "triton")
        ideal_us = bw.ideal_s(case) * 1e6
        for name, bind in variants(p).items():
            try:
                us = timed(p, bind)
                rows.append((case.kv_cache_dtype, case.num_tokens, case.l2, name, f"{us:.2f}", f"{ideal_us / us:.3f}"))
            except Exception as exc:  # a variant that does not compile or verify: shown, not fatal
                rows.append((case.kv_cache_dtype, case.num_tokens, case.l2, name, "failed", str(exc)[:80]))
        del p
        torch.cuda.empty_cache()
    print(f"\n{title}")
    print(tabulate(rows, ["kv", "tokens", "L2", "variant", "µs", "ideal/time"], tablefmt="github"))


def main():
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--quick", action="store_true", help="fewer token counts")
    quick = args.parse_args().quick
    print(torch.cuda.get_device_name(), "torch", torch.__version__, "triton", triton.__version__)
    bw = bandwidth.CopyBandwidth(bandwidth.measure_copy("cuda"), "measured now")
    print(f"copy bandwidth {bw.bytes_per_s / 1e9:.1f} GB/s")
    tokens = [16384, 65536] if quick else [4096, 16384, 65536]
    table("flash NHD", [make_case("triton", "nhd", num_tokens=n, kv_cache_dtype=kv, l2=l2)
                        for kv in ("auto", "fp8") for n in tokens for l2 in ("warm", "cold")], flash_variants, bw)
    table("MLA", [make_case("triton", op="mla", num_tokens=n, kv_cache_dtype=kv, l2=l2)
                  for kv in ("auto", "fp8", "fp8_ds_mla") for n in tokens for l2 in ("cold",)], mla_variants, bw)
    table("indexer", [make_case("triton", op="indexer", num_tokens=n) for n in [1024] + tokens], indexer_variants, bw)


if __name__ == "__main__":
    main()
