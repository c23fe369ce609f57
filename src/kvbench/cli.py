"""The `kvbench` command: `sweep` (vLLM's benchmark script's flags and more), `info` and `fidelity`."""

from __future__ import annotations

import argparse
import sys

import json

from tabulate import tabulate

from kvbench import fidelity, impls, isolation, machine, report, roofline
from kvbench.case import BLOCK_SIZES, DTYPES, FP8_SCALES, HEAD_SIZES, KV_CACHE_DTYPES, L2_STATES, LAYOUTS, SLOT_PATTERNS
from kvbench.device import default_device
from kvbench.errors import CaseError, KvbenchError
from kvbench.runner import Result, make_case, prepare, run_case
from kvbench.timing import MODES

DEFAULT_TOKENS = [2**i for i in range(1, 17)]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message}\n")


def _flag(group, name: str, **kw):
    """Add --a-b with --a_b as an alias (vLLM's script spells its flags with dashes)."""
    spellings = [f"--{name}"] + ([f"--{name.replace('-', '_')}"] if "-" in name else [])
    group.add_argument(*spellings, **kw)


def _same_process_flag(p) -> None:
    _flag(p, "same-process", action="store_true",
          help="on CUDA, measure every case in this one process (vLLM's script does) instead of a fresh process "
               "per case (as asv does): later cases of tiny kernels then read up to ~11 %% high")


def _caller(device: str, same_process: bool):
    """How cases are run: in a fresh forked process each on CUDA (kvbench.isolation), else directly."""
    if device != "cuda" or same_process:
        return lambda function, *args: function(*args)
    isolation.warm_triton()
    return isolation.run


def _add_sweep(sub) -> None:
    p = sub.add_parser("sweep", help="time implementations over num_tokens 2..65536 (vLLM's script's flags)")
    _flag(p, "num-heads", type=int, default=128)
    _flag(p, "head-size", type=int, default=128, choices=HEAD_SIZES)
    _flag(p, "block-size", type=int, default=16, choices=BLOCK_SIZES)
    _flag(p, "num-blocks", type=int, default=16384)
    _flag(p, "dtype", default="bfloat16", choices=tuple(DTYPES))
    _flag(p, "kv-cache-dtype", default="auto", choices=tuple(KV_CACHE_DTYPES))
    _flag(p, "iters", type=int, default=200, help="timed samples per case (the median is reported)")
    _flag(p, "mode", default="cudagraph", choices=MODES)
    _flag(p, "implementation", nargs="+", default=None, choices=impls.names(),
          help="default: every implementation available on the device")
    _flag(p, "layout", default=None, choices=LAYOUTS, help="default: each implementation's own")
    _flag(p, "fp8-scales", default="tensor", choices=FP8_SCALES)
    _flag(p, "slots", default="random", choices=SLOT_PATTERNS,
          help="slot pattern: random (vLLM's benchmark), prefill (consecutive slots), decode (one per block)")
    _flag(p, "l2", default="warm", choices=L2_STATES,
          help="warm: same inputs every call (vLLM's method); cold: rotate inputs/slots past 4x the L2")
    _flag(p, "num-tokens", type=int, nargs="+", default=DEFAULT_TOKENS)
    _flag(p, "device", default=None, choices=("cuda", "cpu"))
    _same_process_flag(p)
    _flag(p, "json", metavar="FILE")
    _flag(p, "csv", metavar="FILE")
    _flag(p, "plot", metavar="FILE.png")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kvbench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_sweep(sub)
    info = sub.add_parser("info", help="device, versions, copy bandwidth, and which implementations run here")
    _flag(info, "device", default=None, choices=("cuda", "cpu"))
    fid = sub.add_parser("fidelity", help="kvbench's cudagraph figure vs an independent CUDA-event measurement")
    _flag(fid, "implementation", nargs="+", default=["torch"], choices=impls.names())
    _flag(fid, "num-tokens", type=int, nargs="+", default=DEFAULT_TOKENS)
    _flag(fid, "layout", default=None, choices=LAYOUTS)
    _flag(fid, "tolerance", type=float, default=0.03, help="allowed |ratio - 1| (default 0.03)")
    _same_process_flag(fid)
    _flag(fid, "json", metavar="FILE")
    mach = sub.add_parser("asv-machine", help="write asv's machine file non-interactively, GPU and versions included")
    _flag(mach, "machine", default=None, help="default: HOST-GPU_MODEL (HOST on CPU-only machines)")
    _flag(mach, "device", default=None, choices=("cuda", "cpu"))
    hist = sub.add_parser("vllm-history", help="time the installed vLLM and file results under its vLLM commit")
    _flag(hist, "vllm-repo", required=True, metavar="CHECKOUT", help="a git checkout of vLLM (with its tags)")
    _flag(hist, "commit", default=None, help="file under this vLLM commit instead of the installed version's")
    _flag(hist, "machine", default=None, help="asv machine name (see kvbench asv-machine)")
    hist.add_argument("asv_args", nargs=argparse.REMAINDER, help="after --: arguments for asv run (e.g. -b ...)")
    site = sub.add_parser("site-vendor", help="make a published asv site work offline (local copies of its libraries)")
    site.add_argument("html_dir", nargs="?", default=".asv/html")
    _flag(site, "cache", default=None, help="where npm packages are kept (default: ~/.cache/kvbench/npm)")
    rep = sub.add_parser("asv-report", help="spreads (IQR / median) of an asv result file, and asv vs fidelity")
    rep.add_argument("results", help="an asv result file (.asv/results/MACHINE/COMMIT-ENV.json)")
    _flag(rep, "fidelity", metavar="FILE", help="JSON written by `kvbench fidelity --json`")
    _flag(rep, "state-log", metavar="FILE",
          help="KVBENCH_STATE_LOG of the run, written with KVBENCH_FIDELITY=1: asv vs the same process's graph")
    _flag(rep, "max-spread", type=float, default=0.01, help="list cases whose IQR / median exceeds this")
    return p


def _header(device: str) -> tuple[dict, roofline.CopyBandwidth]:
    facts = machine.info(device)
    bw = roofline.copy_bandwidth(device, machine.device_key(facts))
    facts["copy_bandwidth_gbps"] = round(bw.bytes_per_s / 1e9, 1)
    facts["copy_bandwidth_source"] = bw.source
    return facts, bw


def _print_header(facts: dict) -> None:
    for key, value in facts.items():
        if value is not None:
            print(f"{key:>22}: {value}")


def _available(device: str) -> dict[str, str | None]:
    return {name: impl.unavailable_reason(device) for name, impl in impls.REGISTRY.items()}


def cmd_info(args) -> int:
    device = args.device or default_device()
    facts, _ = _header(device)
    _print_header(facts)
    print("\nimplementations:")
    for name, reason in _available(device).items():
        impl = impls.get(name)
        state = "available" if reason is None else f"unavailable: {reason}"
        print(f"  {name:<12} {state}\n  {'':<12} {impl.description}; layouts {', '.join(impl.layouts)}")
    return 0


def _check_some_case_is_valid(names, args, common) -> None:
    """Raise the first CaseError when no requested case is valid (bad flags fail before any work)."""
    first = None
    for name in names or ["torch"]:
        for tokens in args.num_tokens:
            try:
                make_case(name, args.layout, num_tokens=tokens, **common)
                return
            except CaseError as exc:
                first = first or exc
    raise first


def cmd_sweep(args) -> int:
    device = args.device or default_device()
    names = args.implementation or [n for n, r in _available(device).items() if r is None]
    common = dict(num_heads=args.num_heads, head_size=args.head_size, block_size=args.block_size,
                  num_blocks=args.num_blocks, dtype=args.dtype, kv_cache_dtype=args.kv_cache_dtype,
                  device=device, fp8_scales=args.fp8_scales, slots=args.slots, l2=args.l2)
    _check_some_case_is_valid(names, args, common)
    call = _caller(device, args.same_process)
    facts, bw = call(_header, device)
    _print_header(facts)
    results = []
    total, done = len(names) * len(args.num_tokens), 0
    for name in names:
        rows = []
        for tokens in args.num_tokens:
            done += 1
            try:
                case = make_case(name, args.layout, num_tokens=tokens, **common)
            except CaseError as exc:  # e.g. more tokens than slots: this row only
                r = Result(name, args.mode, tokens, "skipped", dict(common, num_tokens=tokens), message=str(exc))
            else:
                try:
                    r = call(run_case, case, name, args.mode, args.iters, bw)
                except isolation.ChildDied as exc:
                    r = Result(name, args.mode, tokens, "failed", dict(common, num_tokens=tokens), message=str(exc))
            shown = f"{r.latency_us:.3f} µs" if r.status == "ok" else f"{r.status}: {r.message}"
            print(f"[{done}/{total}] {name} {tokens} tokens: {shown}", file=sys.stderr, flush=True)
            for warning in r.warnings:
                print(f"WARNING: not trustworthy: {warning}", file=sys.stderr, flush=True)
            rows.append(r)
        print(f"\nBenchmark results for implementation {name} (measuring with {args.mode}):")
        print(report.table(rows))
        results += rows
    if args.json:
        report.write_json(args.json, facts, results)
    if args.csv:
        report.write_csv(args.csv, results)
    if args.plot:
        title = f"{args.num_heads}x{args.head_size} {args.dtype} kv {args.kv_cache_dtype} ({facts['device_name']})"
        report.plot(args.plot, results, bw.bytes_per_s / 1e9, title)
    return 1 if any(r.status == "failed" for r in results) else 0


def _fidelity_case(name: str, layout: str | None, tokens: int) -> fidelity.Fidelity:
    return fidelity.compare(prepare(make_case(name, layout, num_tokens=tokens), name))


def cmd_fidelity(args) -> int:
    call = _caller(default_device(), args.same_process)
    rows = []
    for name in args.implementation:
        for tokens in args.num_tokens:
            f = call(_fidelity_case, name, args.layout, tokens)
            rows.append(f)
            print(f"{name} {tokens}: ratio {f.ratio:.4f}", file=sys.stderr, flush=True)
    headers = ("implementation", "num_tokens", "calls/replay", "kvbench (µs)", "independent (µs)", "ratio")
    print(tabulate([(f.implementation, f.num_tokens, f.calls_per_replay, f"{f.kvbench_us:.3f}",
                     f"{f.independent_us:.3f}", f"{f.ratio:.4f}") for f in rows], headers, tablefmt="github"))
    if args.json:
        with open(args.json, "w") as out:
            json.dump([dict(vars(f), ratio=f.ratio) for f in rows], out, indent=1)
    return 0 if all(abs(f.ratio - 1) <= args.tolerance for f in rows) else 1


def cmd_asv_report(args) -> int:
    from kvbench import asv_results

    rows = asv_results.cases(args.results)
    timed = [r for r in rows if r["spread"] is not None]
    wide = sorted((r for r in timed if r["spread"] > args.max_spread), key=lambda r: -r["spread"])
    spreads = sorted(r["spread"] for r in timed)
    if spreads:
        print(f"{len(timed)} timed cases; IQR / median: median {100 * spreads[len(spreads) // 2]:.2f} %, "
              f"max {100 * spreads[-1]:.2f} %; {len(wide)} above {100 * args.max_spread:.1f} %")
    print(tabulate([(r["name"], " ".join(r["params"]), f"{r['median'] * 1e6:.3f}", f"{100 * r['spread']:.2f}")
                    for r in wide], ("benchmark", "parameters", "median (µs)", "IQR/median %"), tablefmt="github"))
    failed = False
    if args.fidelity:
        with open(args.fidelity) as f:
            failed |= _print_ratios("asv vs `kvbench fidelity` (another process)",
                                    asv_results.fidelity_ratios(rows, json.load(f)))
    if args.state_log:
        with open(args.state_log) as f:
            state_rows = [json.loads(line) for line in f if line.strip()]
        failed |= _print_ratios("asv vs the same benchmark process's graph, timed independently",
                                asv_results.same_process_ratios(rows, state_rows))
    return 1 if failed else 0


def _print_ratios(title: str, ratios: list[dict], tolerance: float = 0.03) -> bool:
    """Print asv-vs-independent rows; True if a ratio is more than `tolerance` from 1."""
    print(f"\n{title}: {len(ratios)} cases")
    print(tabulate([(r["implementation"], r["num_tokens"], r["dtype"], r["kv_cache_dtype"],
                     f"{r['asv_us']:.3f}", f"{r['independent_us']:.3f}", f"{r['ratio']:.4f}") for r in ratios],
                   ("implementation", "num_tokens", "dtype", "kv", "asv (µs)", "independent (µs)", "ratio"),
                   tablefmt="github"))
    return any(abs(r["ratio"] - 1) > tolerance for r in ratios)


def cmd_asv_machine(args) -> int:
    from kvbench import asv_machine

    for key, value in asv_machine.write(args.device or default_device(), args.machine).items():
        print(f"{key:>8}: {value}")
    return 0


def cmd_vllm_history(args) -> int:
    from kvbench import vllm_history

    extra = args.asv_args[1:] if args.asv_args[:1] == ["--"] else args.asv_args
    return vllm_history.run(args.vllm_repo, extra, commit=args.commit, machine=args.machine)


def cmd_site_vendor(args) -> int:
    import pathlib

    from kvbench import site_vendor

    cache = args.cache or pathlib.Path.home() / ".cache" / "kvbench" / "npm"
    print(f"vendored into {args.html_dir}/vendor: {', '.join(site_vendor.vendor(args.html_dir, cache))}")
    return 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        commands = {"sweep": cmd_sweep, "info": cmd_info, "fidelity": cmd_fidelity, "asv-report": cmd_asv_report,
                    "asv-machine": cmd_asv_machine, "vllm-history": cmd_vllm_history, "site-vendor": cmd_site_vendor}
        return commands[args.command](args)
    except KvbenchError as exc:  # invalid case, or nothing can run it here
        print(f"kvbench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
