"""The README's "as served vs as benchmarked" table, measured in one process on a GPU with the installed vLLM.

For each model preset and serving batch: vLLM's CUDA flash op, vLLM's Triton op and kvbench's Triton kernel in the
layout, block size and slots vLLM serves with (kvbench.ops.served; the batch from a block table), and the same
shape as vLLM's benchmark script measures it (layout nhd, block 16, random slots); each case verified first, then
timed in cudagraph mode (warm L2). Ideal = bytes moved / the copy bandwidth measured here. Also DeepSeek's MLA and
indexer writes as served. Writes JSON (every row) and a markdown table.

Usage (GPU machine, vLLM's kernels installed): PYTHONPATH=src python3 scripts/served_table.py OUT_DIR [--iters N]
The files are rewritten after each row of the table, so a run cut off (timeout's SIGTERM) keeps what it measured,
marked partial. A dry run of the script without a GPU: --device cpu --small (tiny batches and caches, no_graph;
vLLM's and kvbench's GPU kernels then skip with their reasons).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import signal
import sys

from tabulate import tabulate

from kvbench.measure import bandwidth, machine
from kvbench.ops import models, slots
from kvbench.runner import make_case, run_case, served_case

PRESETS = [("llama-3.1-8b", 1), ("llama-3.1-70b", 8), ("qwen3-30b-a3b", 1), ("gpt-oss-120b", 1),
           ("vllm-benchmark", 1)]
BATCHES = [("decode-padded", 64), ("decode-padded", 512), ("mixed", 2048), ("prefill", 8192), ("prefill", 65536)]
KV_IMPLEMENTATIONS = ["vllm-flash", "vllm-triton", "triton"]
MLA_WRITES = [("deepseek-v3", "mla", "auto"), ("deepseek-v3", "mla", "fp8"), ("deepseek-v3.2", "mla", "fp8_ds_mla"),
              ("deepseek-v3.2", "indexer", "fp8")]
SLOTS_PER_CACHE = 16384 * 16  # as many slots as vLLM's benchmark's cache
# --small (a dry run): tiny batches and caches
SMALL_BATCHES = [("decode-padded", 64), ("mixed", 512), ("prefill", 1024)]
SMALL_SLOTS_PER_CACHE = 256 * 16
MODE = {"cuda": "cudagraph", "cpu": "no_graph"}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run measures with: the device (--device), the serving batches and cache size (--small: tiny ones),
    the samples per case and the copy bandwidth."""

    device: str
    batches: list
    slots_per_cache: int
    iters: int
    bw: bandwidth.CopyBandwidth


def case_for(plan, implementation, op, shapes, tokens, batch, kv, served_layout: bool):
    """The served case (layout "served", the batch's slots) or the benchmarked one (nhd, block 16, random)."""
    if served_layout:  # the GPU's served layout also on --device cpu (vLLM's CPU backend has its own)
        return served_case(implementation, op, plan.slots_per_cache, layout_device="cuda", num_tokens=tokens,
                           kv_cache_dtype=kv, device=plan.device, slots=batch, **shapes)
    need = slots.blocks_needed("random", tokens, 16)
    return make_case(implementation, "nhd" if op == "kv" else None, op, num_tokens=tokens, block_size=16,
                     kv_cache_dtype=kv, num_blocks=max(plan.slots_per_cache // 16, need), device=plan.device,
                     slots="random", **shapes)


def measure(plan, case, implementation) -> dict:
    r = run_case(case, implementation, MODE[case.device], plan.iters, plan.bw)
    row = {"implementation": implementation, "case": case.label(), "status": r.status, "message": r.message,
           "latency_us": r.latency_us, "ideal_us": plan.bw.ideal_s(case) * 1e6, "bytes": case.bytes_moved,
           "samples_us": r.samples_us, "calls_per_sample": r.calls_per_sample,
           "gpu_state": r.gpu_state}  # (the spread behind the median and the clocks after it: kvbench's 64-token fp8
    # decode rows read 0.1-0.2 µs slower here than sampled in turns with vLLM's op, their samples stepping up within
    # one measurement, H100 2026-12-06)
    print(f"{implementation:12} {case.label()}: {r.status} {r.latency_us or r.message}", file=sys.stderr, flush=True)
    return row


UNSTEADY = 0.03  # a row whose samples spread over more than this fraction of their median (max - min) is marked


def spread(row) -> float | None:
    """(max - min) / median of the row's samples: a steady kernel's stay within a fraction of a percent; a row
    whose samples sit at two levels (kvbench's small fp8 decode programs, H100 2026-12-06) shows it here."""
    samples = row.get("samples_us") or []
    return (max(samples) - min(samples)) / row["latency_us"] if len(samples) > 1 and row["latency_us"] else None


def fmt(row) -> str:
    """µs to one decimal, marked † where the samples are unsteady (spread above UNSTEADY); or the status."""
    if row["status"] != "ok":
        return row["status"]
    return f"{row['latency_us']:.1f}" + ("†" if (spread(row) or 0) > UNSTEADY else "")


KV_HEADERS = ["model (per GPU)", "batch, tokens", "kv", "vllm-flash served (bench)", "vllm-triton served (bench)",
              "triton served (bench)", "ideal", "flash served/bench", "vllm-triton served/bench", "triton % of copy",
              "triton / best vLLM"]
MLA_HEADERS = ["write", "batch, tokens", "kv", "vllm", "triton", "ideal"]


def _sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                   help="cpu: a dry run of the script (timed no_graph; the GPU kernels skip)")
    p.add_argument("--small", action="store_true", help="tiny batches and caches (a dry run)")
    args = p.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    facts = machine.info(args.device)
    bw = bandwidth.copy_bandwidth(args.device, machine.device_key(facts))
    plan = Plan(args.device, SMALL_BATCHES if args.small else BATCHES,
                SMALL_SLOTS_PER_CACHE if args.small else SLOTS_PER_CACHE, args.iters, bw)
    rows, table, mla_table = [], [], []
    head = (f"{facts.get('device_name')}, copy {bw.bytes_per_s / 1e9:.0f} GB/s, {facts.get('vllm')}; †: the "
            f"samples spread over more than {UNSTEADY:.0%} of their median (the JSON keeps them)\n\n")

    def save(done: bool) -> str:
        """Both files with what is measured so far (marked partial until the end)."""
        text = head if done else f"PARTIAL (cut off after {len(rows)} rows)\n" + head
        text += tabulate(table, KV_HEADERS, tablefmt="github") + "\n"
        if mla_table or done:
            text += "\n" + tabulate(mla_table, MLA_HEADERS, tablefmt="github") + "\n"
        (out / "served-table.md").write_text(text)
        (out / "served-table.json").write_text(json.dumps({"machine": facts, "copy_bytes_per_s": bw.bytes_per_s,
                                                           "complete": done, "rows": rows}, indent=1))
        return text

    signal.signal(signal.SIGTERM, _sigterm)  # timeout(1): keep what was measured
    try:
        _kv_rows(plan, rows, table, save)
        _mla_rows(plan, rows, mla_table, save)
    except KeyboardInterrupt as exc:
        print(save(False))
        print(f"served table cut off ({exc or 'interrupted'}) after {len(rows)} rows", file=sys.stderr)
        return 124
    print(save(True))
    return 0


def _kv_rows(plan, rows, table, save):
    for name, tp in PRESETS:
        op, shapes = models.get(name).fields(tp)
        for batch, tokens in plan.batches:
            for kv in ("auto", "fp8"):
                got = {}
                for impl in KV_IMPLEMENTATIONS:
                    for is_served in (True, False):
                        row = measure(plan, case_for(plan, impl, op, shapes, tokens, batch, kv, is_served), impl)
                        row.update(model=name, tp=tp, batch=batch, tokens=tokens, kv=kv, served=is_served)
                        rows.append(row)
                        got[impl, is_served] = row
                ideal = got["triton", True]["ideal_us"]
                ok = [got[i, True]["latency_us"] for i in KV_IMPLEMENTATIONS[:2] if got[i, True]["status"] == "ok"]
                own = got["triton", True]
                table.append([f"{name}" + (f" tp{tp}" if tp > 1 else ""), f"{batch} {tokens}", kv,
                              *(f"{fmt(got[i, True])} ({fmt(got[i, False])})" for i in KV_IMPLEMENTATIONS),
                              f"{ideal:.1f}",
                              *(f"{got[i, True]['latency_us'] / got[i, False]['latency_us']:.2f}"
                                if got[i, True]["status"] == got[i, False]["status"] == "ok" else "-"
                                for i in KV_IMPLEMENTATIONS[:2]),
                              f"{100 * ideal / own['latency_us']:.0f} %" if own["status"] == "ok" else "-",
                              f"{own['latency_us'] / min(ok):.2f}" if ok and own["status"] == "ok" else "-"])
                save(False)


def _mla_rows(plan, rows, mla_table, save):
    for name, op, kv in MLA_WRITES:
        shapes = models.get(name).fields(1, op)[1]
        for batch, tokens in plan.batches:
            got = {impl: measure(plan, case_for(plan, impl, op, shapes, tokens, batch, kv, True), impl)
                   for impl in ("vllm", "triton")}
            for impl, row in got.items():
                row.update(model=name, op=op, batch=batch, tokens=tokens, kv=kv, served=True)
                rows.append(row)
            mla_table.append([f"{name} {op}", f"{batch} {tokens}", kv, fmt(got["vllm"]), fmt(got["triton"]),
                              f"{got['vllm']['ideal_us']:.2f}"])
            save(False)


if __name__ == "__main__":
    sys.exit(main())
