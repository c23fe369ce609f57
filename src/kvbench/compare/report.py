"""What `kvbench compare` prints and writes: asv compare's table (marks, Before, After, Ratio, Benchmark) with how
many allocations were measured and the spread of their rounds' ratios, a summary line, and a JSON file with every
sample.

Marks, as asv compare's: `+` B slower than A by more than the factor, `-` faster by more than it, `!` B failed
where A was measured (counted as worse), `*` A failed where B was measured, `x` not comparable (one side
skipped, without the benchmark, or the class's asv `version` differs), blank otherwise (both skipped or failed).
"""

from __future__ import annotations

import json

from tabulate import tabulate

from kvbench import files
from kvbench.compare.session import Outcome

TITLES = {"green": "Benchmarks that have improved:", "default": "Benchmarks that have stayed the same:",
          "red": "Benchmarks that have got worse:", "lightgrey": "Benchmarks that are not comparable:"}


def mark(o: Outcome, factor: float) -> tuple[str, str]:
    """(mark, group) of an outcome, the group being asv compare's --split colour."""
    a, b = o.a.status, o.b.status
    if a == "ok" and b == "ok":
        if o.a.version != o.b.version:
            return "x", "lightgrey"
        if o.ratio > factor:
            return "+", "red"
        if o.ratio < 1 / factor:
            return "-", "green"
        return " ", "default"
    if a == "ok" and b == "failed":
        return "!", "red"
    if a == "failed" and b == "ok":
        return "*", "green"
    if "ok" in (a, b):
        return "x", "lightgrey"
    return " ", "default"


def human_time(seconds: float | None, status: str = "ok") -> str:
    if seconds is None:
        return "failed" if status == "failed" else "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g}{unit}"
    return f"{seconds / 1e-9:.3g}ns"


def row(o: Outcome, factor: float) -> tuple[str, str, list[str]]:
    """(mark, group, cells) of one combination's table row."""
    m, group = mark(o, factor)
    ratios = [r for rs in o.round_ratios() for r in rs]
    return m, group, [m, human_time(o.a.median_s, o.a.status), human_time(o.b.median_s, o.b.status),
                      "n/a" if o.ratio is None else f"{o.ratio:.2f}", str(len(o.allocation_ratios) or ""),
                      f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "", o.combination.name]


def table(outcomes: list[Outcome], a, b, factor: float, split: bool = False, only_changed: bool = False) -> str:
    """asv compare's table, in the run's order (or, with `split`, in asv's groups); `only_changed` leaves out
    what asv's --only-changed does (blank, x and * rows)."""
    headers = ["Change", f"Before [{a.short}] <{a.name}>", f"After [{b.short}] <{b.name}>", "Ratio",
               "Allocations", "Rounds (min-max)", "Benchmark (Parameter)"]
    made = [r for r in (row(o, factor) for o in outcomes) if not (only_changed and r[0] in (" ", "x", "*"))]
    groups = [(None, made)] if not split else [(key, [r for r in made if r[1] == key]) for key in TITLES]
    parts = []
    for key, group in groups:
        if group:
            title = f"\n{TITLES[key]}\n\n" if key and not only_changed else ""
            parts.append(title + tabulate([r[2] for r in group], headers, tablefmt="github", disable_numparse=True))
    return "\n".join(parts)


def counts(outcomes: list[Outcome], factor: float) -> dict[str, int]:
    out = {"slower": 0, "faster": 0, "same": 0, "not comparable": 0, "failed in B": 0, "fixed in B": 0,
           "skipped or failed on both": 0}
    names = {"+": "slower", "-": "faster", "!": "failed in B", "*": "fixed in B"}
    for o in outcomes:
        m, group = mark(o, factor)
        key = names.get(m) or ("not comparable" if m == "x" else
                               "same" if o.measured else "skipped or failed on both")
        out[key] += 1
    return out


def summary(outcomes: list[Outcome], factor: float, wall_s: float) -> str:
    c = counts(outcomes, factor)
    measured = sum(o.wall_s for o in outcomes)
    per = f", {measured / len(outcomes):.2f} s per combination" if outcomes else ""
    parts = ", ".join(f"{n} {what}" for what, n in c.items() if n)
    plural = "s" if len(outcomes) != 1 else ""
    return (f"{len(outcomes)} combination{plural} compared at factor {factor:g} in {wall_s:.0f} s{per}: "
            f"{parts or 'none'}")


def regressed(outcomes: list[Outcome], factor: float) -> bool:
    """What makes `kvbench compare` exit 1, as `asv continuous`: B slower beyond the factor, or failing where A
    was measured."""
    return any(mark(o, factor)[0] in ("+", "!") for o in outcomes)


def as_dict(o: Outcome, factor: float) -> dict:
    def side(s):
        return {"status": s.status, "reason": s.reason, "mode": s.mode, "version": s.version,
                "calls_per_sample": s.calls_per_sample, "steps_s": s.steps, "median_s": s.median_s,
                "samples_s": s.allocations}

    return {"name": o.combination.name, "benchmark": o.combination.benchmark, "params": list(o.combination.params),
            "mark": mark(o, factor)[0], "ratio": o.ratio, "allocation_ratios": o.allocation_ratios,
            "round_ratios": o.round_ratios(), "wall_s": o.wall_s,
            "steps_s": o.steps, "a": side(o.a), "b": side(o.b)}


def write_json(path, header: dict, outcomes: list[Outcome], factor: float) -> None:
    with files.atomic(path) as f:
        json.dump({**header, "results": [as_dict(o, factor) for o in outcomes]}, f, indent=1)
