"""`kvbench sweep`: vLLM's benchmark script's flags and table, every implementation, verified before it is timed."""

from __future__ import annotations

import sys

from kvbench import config, files, impls
from kvbench.cli import report
from kvbench.cli.flags import bounded, device, flag, positive, same_process
from kvbench.errors import EXIT_CASE_FAILED, EXIT_NOTHING_MEASURED, CaseError, KvbenchError
from kvbench.measure import bandwidth, isolation, machine
from kvbench.measure.device import resolve
from kvbench.measure.timing import MODES
from kvbench.ops import layouts
from kvbench.ops.base import DTYPES, L2_STATES
from kvbench.ops.kv import FP8_SCALES, HEAD_SIZES, KV_CACHE_DTYPES, Case
from kvbench.runner import Result, make_case, run_case

DEFAULT_MODE = {"cuda": "cudagraph", "cpu": "no_graph"}


def add(sub) -> None:
    p = sub.add_parser("sweep", help="time implementations over num_tokens 2..65536 (vLLM's script's flags)")
    flag(p, "num-heads", type=positive, default=128)
    flag(p, "head-size", type=int, default=128, choices=HEAD_SIZES)
    flag(p, "block-size", type=int, default=16, choices=Case.BLOCK_SIZES)
    flag(p, "num-blocks", type=positive, default=None,
         help=f"default: {config.NUM_BLOCKS['cuda']} on a GPU (vLLM's), {config.NUM_BLOCKS['cpu']} on a CPU")
    flag(p, "dtype", default="bfloat16", choices=tuple(DTYPES))
    flag(p, "kv-cache-dtype", default="auto", choices=tuple(KV_CACHE_DTYPES))
    flag(p, "iters", type=bounded(1, config.MAX_ITERS), default=200,
         help="timed samples per case (the median is reported)")
    flag(p, "mode", default=None, choices=MODES, help="default: cudagraph on a GPU, no_graph on a CPU")
    flag(p, "implementation", nargs="+", default=None, choices=impls.names(),
         help="default: every implementation available on the device")
    flag(p, "layout", default=None, choices=layouts.LAYOUTS, help="default: each implementation's own")
    flag(p, "fp8-scales", default="tensor", choices=FP8_SCALES)
    flag(p, "slots", default="random", choices=Case.SLOT_PATTERNS,
         help="random (vLLM's benchmark), prefill (consecutive slots), decode (one per block), padded (a quarter "
              "padding)")
    flag(p, "l2", default="warm", choices=L2_STATES,
         help="warm: same inputs every call (vLLM's method); cold: rotate inputs/slots past 4x the L2")
    flag(p, "num-tokens", type=positive, nargs="+", default=list(config.DEFAULT_TOKENS))
    device(p)
    same_process(p)
    flag(p, "json", metavar="FILE")
    flag(p, "csv", metavar="FILE")
    flag(p, "plot", metavar="FILE.png")
    p.set_defaults(run=run)


def caller(device: str, same: bool):
    """How cases are run: in a fresh forked process each on CUDA (kvbench.measure.isolation), else directly."""
    if device != "cuda" or same:
        return lambda function, *args: function(*args)
    isolation.warm_triton()
    return isolation.run


def header(device: str) -> tuple[dict, bandwidth.CopyBandwidth]:
    facts = machine.info(device)
    bw = bandwidth.copy_bandwidth(device, machine.device_key(facts))
    facts["copy_bandwidth_gbps"] = round(bw.bytes_per_s / 1e9, 1)
    facts["copy_bandwidth_source"] = bw.source
    return facts, bw


def print_header(facts: dict) -> None:
    for key, value in facts.items():
        if value is not None:
            print(f"{key:>22}: {value}")


def available(device: str) -> dict[str, str | None]:
    return {name: impl.unavailable_reason(device) for name, impl in impls.REGISTRY.items()}


def _check_some_case_is_valid(names, args, common) -> None:
    """Raise the first CaseError when no requested case is valid (bad flags fail before any work)."""
    first = None
    for name in names:
        for tokens in args.num_tokens:
            try:
                make_case(name, args.layout, num_tokens=tokens, **common)
                return
            except CaseError as exc:
                first = first or exc
    raise first


def run(args) -> int:
    device = resolve(args.device)
    outputs = {what: files.check_writable(path, f"--{what}") for what in ("json", "csv", "plot")
               if (path := getattr(args, what))}
    chosen = {"num_blocks": args.num_blocks is None and device == "cpu", "mode": args.mode is None and device == "cpu"}
    args.num_blocks = args.num_blocks or config.NUM_BLOCKS[device]
    args.mode = args.mode or DEFAULT_MODE[device]
    names = args.implementation or [n for n, r in available(device).items() if r is None]
    common = dict(num_heads=args.num_heads, head_size=args.head_size, block_size=args.block_size,
                  num_blocks=args.num_blocks, dtype=args.dtype, kv_cache_dtype=args.kv_cache_dtype,
                  device=device, fp8_scales=args.fp8_scales, slots=args.slots, l2=args.l2)
    _check_some_case_is_valid(names, args, common)
    call = caller(device, args.same_process)
    facts, bw = call(header, device)
    print_header(facts)
    if any(chosen.values()):
        print(f"{'defaults on cpu':>22}: num_blocks {args.num_blocks}, mode {args.mode} (sized for this CPU; "
              f"--num-blocks and --mode to change)")
    results = []
    total, done = len(names) * len(args.num_tokens), 0
    for name in names:
        rows = []
        for tokens in args.num_tokens:
            done += 1
            r = _row(call, name, tokens, args, common, bw)
            shown = f"{r.latency_us:.3f} µs" if r.status == "ok" else f"{r.status}: {r.message}"
            print(f"[{done}/{total}] {name} {tokens} tokens: {shown}", file=sys.stderr, flush=True)
            for warning in r.warnings:
                print(f"WARNING: not trustworthy: {warning}", file=sys.stderr, flush=True)
            rows.append(r)
        print(f"\nBenchmark results for implementation {name} (measuring with {args.mode}):")
        print(report.table(rows))
        results += rows
    if "json" in outputs:
        report.write_json(outputs["json"], facts, results)
    if "csv" in outputs:
        report.write_csv(outputs["csv"], results)
    if "plot" in outputs:
        title = f"{args.num_heads}x{args.head_size} {args.dtype} kv {args.kv_cache_dtype} ({facts['device_name']})"
        report.plot(outputs["plot"], results, bw.bytes_per_s / 1e9, title)
    return exit_code(results)


def _row(call, name: str, tokens: int, args, common: dict, bw) -> Result:
    try:
        case = make_case(name, args.layout, num_tokens=tokens, **common)
    except CaseError as exc:  # e.g. more tokens than slots: this row only
        return Result(name, args.mode, tokens, "skipped", dict(common, num_tokens=tokens), message=str(exc))
    try:
        return call(run_case, case, name, args.mode, args.iters, bw)
    except KvbenchError as exc:  # the case's process died
        return Result(name, args.mode, tokens, "failed", dict(common, num_tokens=tokens), message=str(exc))


def exit_code(results: list[Result]) -> int:
    """1 if a case failed, 5 if nothing was measured (every case skipped), else 0."""
    if any(r.status == "failed" for r in results):
        return EXIT_CASE_FAILED
    if not any(r.status == "ok" for r in results):
        print("kvbench: nothing was measured: every case was skipped (reasons above)", file=sys.stderr)
        return EXIT_NOTHING_MEASURED
    return 0
