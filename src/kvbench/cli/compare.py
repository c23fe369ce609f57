"""`kvbench compare A B`: the asv suite of two git revisions timed interleaved (kvbench.compare), printed as asv
compare's table. Ctrl-C or SIGTERM stops the workers, removes the temporary trees, prints what was finished (and
writes it to --json) and ends in one line, exit 130 or 143."""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sys
import threading
import time

from kvbench import files
from kvbench.cli.flags import bounded, flag
from kvbench.compare import Comparison, RevisionError, report, revisions, session
from kvbench.errors import Interrupted

DESCRIPTION = """Time the asv suite's time_* benchmarks of two git revisions of this repository, interleaved: one
worker process per revision imports that revision's kvbench and benchmarks, and for each combination the two take
turns (rounds of A B B A, on one core), so that a host whose speed drifts (a shared CPU host) slows both alike. An
allocation's ratio is the median over its rounds of B's median over A's; where it is beyond the square root of
--factor, both sides start new worker processes and allocate the case again (memory placement moves small cases),
up to --allocations times, and the ratio is the geometric mean over allocations. A and B are commits (anything
`git rev-parse` accepts); the working tree is not a revision: commit uncommitted code first. The grid is the
suite's, narrowed by the KVBENCH_* variables as for asv; track_* benchmarks are not compared. Exit 1 when a
benchmark got slower beyond --factor or fails in B where A was measured (as asv continuous), 5 when nothing was
measured on either side."""


class Signals:
    """While armed, the first SIGINT or SIGTERM raises kvbench.errors.Interrupted; any later one (or one after
    `disarm`, while the report is written) is only noted, so that stopping the workers, removing the trees and
    reporting run to their end."""

    def __init__(self):
        self.armed = True
        self.received: int | None = None

    def _handler(self, signum, frame):
        self.received = self.received or signum
        if self.armed:
            self.armed = False
            raise Interrupted(signum)

    def disarm(self) -> None:
        self.armed = False

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def pattern(text: str) -> re.Pattern:
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a regular expression ({exc})") from None


def factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 1.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a factor above 1 (e.g. 1.10)")
    return value


def add(sub) -> None:
    p = sub.add_parser("compare", description=DESCRIPTION,
                       help="time two git revisions' suites interleaved in one session (asv compare's table)")
    p.add_argument("a", metavar="A", help="the revision before (a commit; commit working-tree changes first)")
    p.add_argument("b", metavar="B", help="the revision after; its suite says which combinations there are")
    p.add_argument("-b", "--bench", action="append", type=pattern, default=[], metavar="REGEX",
                   help="as asv's -b: a regex searched in benchmarks.Class.method(param, ...); repeatable")
    flag(p, "factor", type=factor, default=1.10, help="flag ratios beyond this (default 1.10)")
    flag(p, "rounds", type=bounded(1, 1000), default=4, help="rounds of A B B A per allocation (default 4)")
    flag(p, "allocations", type=bounded(1, 100), default=5,
         help="at most this many allocations of a case whose ratio is off (default 5; 1: never allocate again)")
    flag(p, "samples", type=bounded(1, 1000), default=2, help="samples per turn (default 2)")
    flag(p, "split", action="store_true", help="as asv compare: improved, same, worse, not comparable")
    flag(p, "only-changed", action="store_true", help="as asv compare: only + - ! rows")
    flag(p, "json", metavar="FILE", help="everything: every sample, by allocation and round")
    flag(p, "repo", default=".", help="the git repository of the revisions (default: the current folder's)")
    p.set_defaults(run=run)


def run(args) -> int:
    if args.json:
        files.check_writable(args.json, "--json")
    comparison = Comparison(args.repo, args.a, args.b)  # a bad revision: one line, before any work
    a, b = comparison.a, comparison.b
    if revisions.dirty(comparison.repo):
        print("kvbench compare: note: uncommitted changes are not compared (A and B are commits)", file=sys.stderr)
    header = {"a": {"name": a.name, "commit": a.sha}, "b": {"name": b.name, "commit": b.sha},
              "repo": str(comparison.repo), "patterns": [p.pattern for p in args.bench], "factor": args.factor,
              "rounds": args.rounds, "samples_per_turn": args.samples, "order": session.ORDER,
              "allocations": args.allocations, "settle": args.factor ** 0.5,
              "load_before": session.load()}
    started = time.perf_counter()
    planned: list = []
    stopped = None
    with Signals().installed() as signals:
        try:
            with comparison:
                facts = comparison.start()
                header["workers"] = {k: w.hello for k, w in comparison.session.workers.items()}
                planned = comparison.select(args.bench)
                if not planned:
                    raise RevisionError(f"no time_* benchmark of revision B matches "
                                        f"{' or '.join(repr(p.pattern) for p in args.bench) or 'anything'}")
                print(f"kvbench compare: A {a.name} ({a.short}) vs B {b.name} ({b.short}): {len(planned)} "
                      f"combinations on {facts['device']} ({facts['mode']}), {args.rounds} rounds of "
                      f"{session.ORDER}, {args.samples} samples per turn, up to {args.allocations} allocations; "
                      f"load {header['load_before']}",
                      file=sys.stderr, flush=True)
                for i, c in enumerate(planned, 1):
                    outcome = comparison.measure(c, args.rounds, args.samples, args.allocations, header["settle"])
                    progress(i, len(planned), outcome, args.factor)
        except Interrupted as exc:
            stopped = exc.signum
        signals.disarm()
        stopped = stopped or signals.received
        return finish(args, comparison, header, len(planned), time.perf_counter() - started, stopped)


def finish(args, comparison: Comparison, header: dict, planned: int, wall: float, stopped: int | None) -> int:
    """Print the table and summary, write --json, and say how it ended (the exit code)."""
    outcomes = comparison.outcomes
    text = report.table(outcomes, comparison.a, comparison.b, args.factor, args.split, args.only_changed)
    if text:
        print(text)
    print(report.summary(outcomes, args.factor, wall))
    if args.json:
        header.update(load_after=session.load(), wall_s=round(wall, 3), planned=planned, done=len(outcomes),
                      interrupted=signal.Signals(stopped).name if stopped else None)
        report.write_json(args.json, header, outcomes, args.factor)
    if stopped:  # kvbench's main says so in one line and exits 128 + the signal
        raise Interrupted(stopped, f"after {len(outcomes)} of {planned} combinations")
    if not any(o.a.median_s is not None or o.b.median_s is not None for o in outcomes):
        print("kvbench compare: nothing was measured on either side (reasons in --json)", file=sys.stderr)
        return 5
    return 1 if report.regressed(outcomes, args.factor) else 0


def progress(i: int, n: int, o, factor_: float) -> None:
    m = report.mark(o, factor_)[0]
    ratio = "n/a" if o.ratio is None else f"{o.ratio:.3f}"
    if len(o.allocation_ratios) > 1:
        ratio += f" (allocations {' '.join(f'{r:.3f}' for r in o.allocation_ratios)})"
    if o.a.status != "ok" and (o.a.status, o.a.reason) == (o.b.status, o.b.reason):
        reasons = f"both {o.a.status}: {o.a.reason}"
    else:
        reasons = "; ".join(f"{k} {s.status}: {s.reason}" for k, s in (("A", o.a), ("B", o.b)) if s.status != "ok")
    print(f"[{i}/{n}] {m} {ratio} {report.human_time(o.a.median_s, o.a.status)} -> "
          f"{report.human_time(o.b.median_s, o.b.status)} {o.combination.name} ({o.wall_s:.2f} s)"
          f"{'; ' + reasons if reasons else ''}", file=sys.stderr, flush=True)
