"""`kvbench sweep`: vLLM's benchmark script's flags and table, every implementation, verified before it is timed."""

from __future__ import annotations

import sys

from kvbench import config, defects, files, impls, ops
from kvbench.cli import interrupts, progress, report
from kvbench.cli.flags import bounded, device, flag, positive, same_process
from kvbench.errors import EXIT_CASE_FAILED, EXIT_NOTHING_MEASURED, CaseError, FileProblem, Interrupted, KvbenchError
from kvbench.measure import bandwidth, isolation, machine
from kvbench.measure.device import resolve
from kvbench.measure.timing import MODES
from kvbench.ops import layouts, models, sectors, served
from kvbench.ops.base import DTYPES, L2_STATES
from kvbench.ops.kv import FP8_SCALES, HEAD_SIZES, Case
from kvbench.runner import Result, bytes_needed, make_case, run_case

DEFAULT_MODE = {"cuda": "cudagraph", "cpu": "no_graph"}


# Flags of one op only (each maps to its Case's field of the same name, dashes for underscores); given for another
# op, they are an error. Flags every op shares are added in `add`.
OP_FLAGS = {
    "kv": {"num-heads": dict(type=positive, help="kv: 128; token-head-quant: 8"),
           "head-size": dict(type=int, choices=HEAD_SIZES, help="kv: 128 (vLLM's choices)"),
           "fp8-scales": dict(choices=FP8_SCALES, help="kv: tensor")},
    "mla": {"kv-lora-rank": dict(type=positive, help="mla: 512"), "pe-dim": dict(type=positive, help="mla: 64"),
            "skip-scale": dict(action="store_true", default=None, help="mla: vLLM's skip_scale (fp8 at scale 1)")},
    "indexer": {"head-dim": dict(type=positive, help="indexer: 128"),
                "scale-fmt": dict(choices=("ue8m0", "fp32", "mxfp8"), help="indexer: ue8m0")},
    "token-head-quant": {"num-heads": {}, "head-size": dict(type=positive)},
    "convert-fp8": {"num-heads": {}, "head-size": {},
                    "direction": dict(choices=("dequantize", "quantize"),
                                      help="convert-fp8: dequantize (fp8 codes -> dtype, default) or quantize")},
    "gather": {"kv-lora-rank": {}, "pe-dim": {},
               "batch": dict(choices=("mixed", "uniform", "contiguous"),
                             help="read ops: the sequences read: mixed lengths on shuffled blocks (default), "
                                  "uniform (512 each, vLLM's tests), contiguous (one sequence, blocks in order)")},
    "cp-gather": {"kv-lora-rank": {}, "pe-dim": {}, "batch": {}},
    "swap-blocks": {"num-heads": {}, "head-size": {},
                    "num-layers": dict(type=positive, help="swap-blocks, mla-grouped: layers (2, 4)"),
                    "transfer": dict(choices=("gpu-cpu", "cpu-gpu", "gpu-gpu"),
                                     help="swap-blocks: source-destination memory (gpu-cpu: an offloading store, "
                                          "default; cpu-gpu: a load; host memory pinned)")},
    "indexer-gather": {"head-dim": {}, "batch": {}},
    "upconvert-gather": {"batch": {}},
    "mla-grouped": {"kv-lora-rank": {}, "pe-dim": {}, "num-layers": {}},
    "concat-mla-q": {"num-heads": {}, "kv-lora-rank": {}, "pe-dim": {}},
    "mla-rope": {"num-heads": {}, "kv-lora-rank": {}, "pe-dim": {},
                 "is-neox": dict(action="store_true", default=None,
                                 help="mla-rope: GPT-NeoX pairs (default: GPT-J pairs, as DeepSeek)")},
}


def add(sub) -> None:
    p = sub.add_parser("sweep", help="time implementations over num_tokens 2..65536 (vLLM's script's flags)")
    flag(p, "op", default=None, choices=tuple(ops.OPS),
         help="kv: reshape_and_cache(_flash) (default); mla: concat_and_cache_mla; indexer: "
              "indexer_k_quant_and_cache; token-head-quant: vLLM's per-token-head quantizing Triton write; the "
              "other cache ops: convert-fp8, gather, cp-gather, indexer-gather, upconvert-gather, swap-blocks, "
              "mla-grouped, concat-mla-q, mla-rope (README: Ops and implementations)")
    flag(p, "model", default=None, choices=tuple(models.MODELS),
         help="a model's cache write on one GPU: its KV heads per GPU and head size (or MLA row), and its op")
    flag(p, "tp", type=positive, default=None, help="with --model: tensor-parallel GPUs (default 1)")
    flag(p, "layout", default=None, choices=layouts.LAYOUTS + ("served",),
         help="kv: each implementation's own (vLLM's benchmark: nhd); served: what the installed vLLM's attention "
              "backend passes (its layout and block size; other ops: its block size)")
    flag(p, "backend", default=None, choices=served.BACKENDS,
         help="with --layout served: whose layout (default flash-attn; vllm-triton: triton-attn)")
    flag(p, "block-size", type=int, default=None, help="default: the op's (kv 16, mla and indexer 64)")
    flag(p, "num-blocks", type=positive, default=None,
         help=f"default: kv {config.NUM_BLOCKS['cuda']} on a GPU (vLLM's), {config.NUM_BLOCKS['cpu']} on a CPU; "
              f"the other ops' own")
    flag(p, "dtype", default="bfloat16", choices=tuple(DTYPES))
    flag(p, "kv-cache-dtype", default=None, help="default: the op's (kv auto, indexer fp8, token-head-quant int8)")
    flag(p, "iters", type=bounded(1, config.MAX_ITERS), default=200,
         help="timed samples per case (the median is reported)")
    flag(p, "mode", default=None, choices=MODES, help="default: cudagraph on a GPU, no_graph on a CPU")
    flag(p, "implementation", nargs="+", default=None, choices=impls.all_names(),
         help="default: every implementation of the op available on the device")
    flag(p, "slots", default="random", choices=Case.SLOT_PATTERNS,
         help="random (vLLM's benchmark), padded (a quarter padding); serving batches from a block table: decode "
              "(one token per sequence), prefill (chunks), mixed (decodes and chunks), decode-padded (a decode batch "
              "padded to vLLM's CUDA-graph size)")
    flag(p, "l2", default="warm", choices=L2_STATES,
         help="warm: same inputs every call (vLLM's method); cold: rotate inputs/slots past 4x the L2")
    flag(p, "num-tokens", type=positive, nargs="+", default=None,
         help=f"default: 2..{config.MAX_TOKENS['cuda']} (powers of two) on a GPU, 2..{config.MAX_TOKENS['cpu']} on a "
              f"CPU")
    added = set()
    for op_flags in OP_FLAGS.values():
        for name, kw in op_flags.items():
            if name not in added and kw:
                flag(p, name, **{"default": None, **kw})
                added.add(name)
    device(p)
    same_process(p)
    flag(p, "json", metavar="FILE")
    flag(p, "csv", metavar="FILE")
    flag(p, "plot", metavar="FILE.png")
    p.set_defaults(run=run, flag_defaults={a.dest: a.default for a in p._actions})


def _sparse(args) -> bool:
    """Whether --model attends through DeepSeek's sparse attention (its served MLA block size is 64)."""
    return args.model is not None and models.get(args.model).sparse


def _case(name: str, args, tokens: int, common: dict):
    """The flags' case of implementation `name` at `tokens` (CaseError where they describe none)."""
    return make_case(name, args.layout, args.op, backend=args.backend, sparse=_sparse(args), num_tokens=tokens,
                     **common)


def op_fields(args, device: str) -> dict:
    """The case fields the flags give (a --model's shapes included) and args.op set; a one-line error for a flag
    of another op or one the model sets."""
    fields = {"dtype": args.dtype, "device": device, "slots": args.slots, "l2": args.l2}
    if args.model is None and args.tp is not None:
        raise CaseError("--tp needs --model (it splits a model's KV heads over GPUs)")
    if args.model is not None:
        args.op, shapes = models.get(args.model).fields(args.tp or 1, args.op)
        for name in shapes:
            if getattr(args, name) is not None:
                raise CaseError(f"--{name.replace('_', '-')} conflicts with --model {args.model} (which sets it)")
        fields.update(shapes)
    args.op = args.op or "kv"
    if args.op != "kv" and args.layout not in (None, "served"):
        raise CaseError(f"--layout {args.layout} applies to op kv only; op {args.op!r} takes --layout served "
                        f"(vLLM's block size for it) or none")
    if args.backend is not None and args.layout != "served":
        raise CaseError("--backend needs --layout served (it says whose served layout)")
    for name in ("block_size", "num_blocks", "kv_cache_dtype"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    for op, op_flags in OP_FLAGS.items():
        for name in op_flags:
            value = getattr(args, name.replace("-", "_"))
            if value is None or name in OP_FLAGS[args.op]:
                continue
            raise CaseError(f"--{name} does not apply to op {args.op!r}; it is a flag of op {op!r}")
    for name in OP_FLAGS[args.op]:
        value = getattr(args, name.replace("-", "_"))
        if value is not None:
            fields[name.replace("-", "_")] = value
    return fields


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


def survey(device: str, op: str, names: list[str]) -> tuple[dict, bandwidth.CopyBandwidth, dict[str, str]]:
    """The header's machine facts and copy bandwidth, and why each of `names` cannot run on `device` here at all
    (found in one child process on CUDA: loading an implementation may touch CUDA)."""
    facts, bw = header(device)
    return facts, bw, {name: reason for name, reason in available(device, op, names).items() if reason}


def print_header(facts: dict) -> None:
    for key, value in facts.items():
        if value is not None:
            print(f"{key:>22}: {value}")


def available(device: str, op: str = "kv", names=None) -> dict[str, str | None]:
    """Why each of `op`'s implementations (or just `names`) cannot run on `device` here; None where it can."""
    return {name: impl.unavailable_reason(device) for name, impl in impls.of(op).items()
            if names is None or name in names}


def _check_some_case_is_valid(names, args, common) -> None:
    """Raise the first CaseError when no requested case is valid (bad flags fail before any work)."""
    first = None
    for name in names:
        for tokens in args.num_tokens:
            try:
                _case(name, args, tokens, common)
                return
            except CaseError as exc:
                first = first or exc
    raise first


def device_defaults(args, device: str, common: dict) -> dict[str, str]:
    """Fill in what the user left to the device (num_blocks, mode, num_tokens); what was chosen, for the header."""
    chosen = {}
    if args.op == "kv" and args.num_blocks is None:
        common["num_blocks"] = config.NUM_BLOCKS[device]
        chosen["num_blocks"] = f"{common['num_blocks']} (--num-blocks)"
    if args.mode is None:
        args.mode = DEFAULT_MODE[device]
        chosen["mode"] = f"{args.mode} (--mode)"
    if args.num_tokens is None:
        args.num_tokens = [t for t in config.DEFAULT_TOKENS if t <= config.MAX_TOKENS[device]]
        chosen["num_tokens"] = f"{args.num_tokens[0]}..{args.num_tokens[-1]} (--num-tokens)"
    return chosen


def given_settings(args) -> str:
    """The flags the user gave (those that differ from their defaults), as `name value` pairs for the header."""
    skip = {"run", "flag_defaults", "json", "csv", "plot", "same_process", "help"}
    defaults = args.flag_defaults
    return ", ".join(f"{k} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                     for k, v in vars(args).items() if k in defaults and k not in skip and v != defaults[k])


def run(args) -> int:
    device = resolve(args.device)
    outputs = {what: files.check_writable(path, f"--{what}") for what in ("json", "csv", "plot")
               if (path := getattr(args, what))}
    given = given_settings(args)
    common = op_fields(args, device)
    chosen = device_defaults(args, device, common)
    names = args.implementation or [n for n, r in available(device, args.op).items() if r is None]
    for name in names:
        impls.get(name, args.op)  # one line naming the op's implementations
    _check_some_case_is_valid(names, args, common)
    call = caller(device, args.same_process)
    facts, bw, unavailable = call(survey, device, args.op, names)
    print_header(facts)
    print(f"{'given':>22}: {given or 'nothing (all defaults)'}")
    if chosen:
        print(f"{'chosen for ' + device:>22}: {', '.join(f'{k} {v}' for k, v in chosen.items())}")
    plan = [(name, tokens) for name in names for tokens in args.num_tokens]
    print(progress.estimate_line(*_plan_cost(plan, unavailable, args, common, bw)), file=sys.stderr, flush=True)
    results: list[Result] = []
    try:
        for name in names:
            rows = _implementation_rows(call, name, args, common, bw, unavailable.get(name), len(results), len(plan))
            results += rows
            _print_table(name, args, rows)
    except Interrupted as exc:  # keep what was finished: its table, its files (marked partial)
        rows = getattr(exc, "rows", [])
        _print_table(name, args, rows)
        results += rows
        exc.detail = f"after {len(results)} of {len(plan)} cases; " + _save(
            outputs, facts, results, args, bw, partial=(len(results), len(plan), exc.signum))
        raise
    if outputs:
        _save(outputs, facts, results, args, bw)
    for line in progress.reason_counts(results):
        print(line, file=sys.stderr)
    return exit_code(results, args.op)


def _plan_cost(plan, unavailable, args, common, bw):
    """The cases the estimate counts (valid, on an available implementation), the iterations, the copy rate, and
    the largest memory one case needs."""
    cases = []
    for name, tokens in plan:
        if name in unavailable:
            continue
        try:
            cases.append(_case(name, args, tokens, common))
        except CaseError:
            continue
    memory = max((bytes_needed(c) for c in cases), default=0)
    return cases, args.iters, bw.bytes_per_s, memory


def _implementation_rows(call, name, args, common, bw, unavailable: str | None, done: int, total: int):
    """One implementation's rows: each case measured (a line of progress each), or, when the implementation cannot
    run here at all, every case skipped with that reason said once."""
    rows: list[Result] = []
    if unavailable:
        message = f"{name}: {unavailable}"
        print(f"[{done + 1}-{done + len(args.num_tokens)}/{total}] {name}: every case skipped: {unavailable}",
              file=sys.stderr, flush=True)
        return [Result(name, args.mode, t, "skipped", dict(common, num_tokens=t), message=message)
                for t in args.num_tokens]
    try:
        for tokens in args.num_tokens:
            label = f"[{done + len(rows) + 1}/{total}] {name} {tokens} tokens"
            with progress.heartbeat(label):
                r = _row(call, name, tokens, args, common, bw)
            rows.append(r)  # kept before anything else can be interrupted
            repeated = len(rows) > 1 and rows[-2].status == r.status and rows[-2].message == r.message
            shown = (f"{r.latency_us:.3f} µs" if r.status == "ok" else
                     f"{r.status} (as above)" if repeated else f"{r.status}: {r.message}")
            print(f"{label}: {shown}", file=sys.stderr, flush=True)
            for warning in r.warnings:
                print(f"WARNING: not trustworthy: {warning}", file=sys.stderr, flush=True)
    except Interrupted as exc:  # the rows finished so far travel with it
        exc.rows = rows
        raise
    return rows


def _print_table(name: str, args, rows: list[Result]) -> None:
    if not rows:
        return
    how = f"op {args.op}, measuring with {args.mode}"
    if args.layout == "served":
        how += "; served: " + served.resolve(args.op, name, rows[0].case["device"], args.backend,
                                             kv_cache_dtype=rows[0].case.get("kv_cache_dtype"),
                                             sparse=_sparse(args))[1]
    print(f"\nBenchmark results for implementation {name} ({how}):")
    if all(r.status == "skipped" for r in rows) and len({r.message for r in rows}) == 1:
        print(f"every case skipped: {rows[0].message}")
    else:
        print(report.table(rows, args.op))


def _save(outputs: dict, facts: dict, results: list[Result], args, bw, partial: tuple | None = None) -> str:
    """Write the outputs asked for (signals held until done); returns where the results are, for the closing line.
    An output that cannot be written after all costs nothing measured: the results go to a new file in the
    temporary directory, named in the error."""
    marker = None if partial is None else {"finished": partial[0], "planned": partial[1],
                                           "signal": interrupts.NAMES.get(partial[2], partial[2])}
    problems = []
    with interrupts.held():
        for what, path in outputs.items():
            try:
                if what == "json":
                    report.write_json(path, facts, results, marker)
                elif what == "csv":
                    report.write_csv(path, results, marker)
                else:
                    title = f"op {args.op}, {args.dtype}, kv {args.kv_cache_dtype or 'default'} ({facts['device_name']})"
                    report.plot(path, results, bw.bytes_per_s / 1e9,
                                title + (f" - partial: {partial[0]} of {partial[1]} cases" if partial else ""))
            except FileProblem as exc:
                problems.append(str(exc))
        if problems:
            rescue = report.write_rescue(facts, results, marker)
            raise FileProblem(f"{problems[0]}; the {len(results)} cases are in {rescue}")
    if not outputs:
        return f"the {len(results)} are in the tables above (no --json, --csv or --plot was given)"
    return f"the {len(results)} are in {', '.join(str(p) for p in outputs.values())} (marked partial)"


def _row(call, name: str, tokens: int, args, common: dict, bw) -> Result:
    try:
        case = _case(name, args, tokens, common)
    except CaseError as exc:  # e.g. more tokens than slots: this row only
        return Result(name, args.mode, tokens, "skipped", dict(common, num_tokens=tokens), message=str(exc))
    try:
        r = call(run_case, case, name, args.mode, args.iters, bw)
    except KvbenchError as exc:  # the case's process died
        return Result(name, args.mode, tokens, "failed", dict(common, num_tokens=tokens), message=str(exc))
    counted = sectors.sector_bytes(case) if r.status == "ok" else None
    if counted:  # the paged layouts: × the sector model's ideal too
        r.x_sector_ideal = r.latency_us * 1e-6 / (counted / bw.bytes_per_s)
    return r


def exit_code(results: list[Result], op: str = "kv") -> int:
    """1 if a case failed other than as a known vLLM defect (kvbench.defects: still a FAILED row, named once
    here), 5 if nothing was measured (every case skipped), else 0."""
    new, lines = defects.verdict(op, results)
    for line in lines:
        print(f"kvbench: {line}", file=sys.stderr)
    if new:
        return EXIT_CASE_FAILED
    if not any(r.status in ("ok", "failed") for r in results):
        print("kvbench: nothing was measured: every case was skipped (reasons above)", file=sys.stderr)
        return EXIT_NOTHING_MEASURED
    return 0
