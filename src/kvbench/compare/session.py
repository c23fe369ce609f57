"""Two worker processes, one per revision, and the interleaved measurement of one benchmark combination.

For each combination both workers prepare the case (runner.prepare: checked, allocated, verified; at once, as
nothing is timed), then calibrate their samplers one after the other, then take turns: each round is A, B, B, A,
so that a drift linear over the round weighs on both sides alike. A turn is one untimed sample (the first after
the other side ran read 3-5 % slow) and `samples` timed ones, or a single timed one where a sample lasts TURN_S
or more (a slow case, a cold-L2 rotation). The workers never run at the same time while timing: one waits on its
pipe while the other measures; on a CPU both are pinned to the same core while an allocation is timed, the next
allocation to the next core (the two cores of the 2-core host ran one case up to 25 % apart under other tenants'
load). A round's ratio is the median of B's samples of the round over the median of A's; an allocation's ratio
is the median of its rounds'.

Interleaving cancels the host's drift but not what is particular to one process or one allocation: on the
2-core host the same case ran up to 12 % apart between two allocations in one process, and up to ~15 % apart
between two processes, steady across fresh allocations in each (torch's MLA writes at 256-1024 tokens: where a
process's heap, stack and mappings lie). So an allocation whose ratio is beyond `settle` either way is not
trusted alone: both sides start new worker processes and prepare the case again, up to `allocations` times, until
the geometric mean of the allocations' ratios (the combination's ratio) is within `settle`. The timed path is
verified after the first allocation's rounds (Prepared.check_timed); a side that fails it has no number.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import pathlib
import statistics
import subprocess
import sys
import time

from kvbench.compare.revisions import Revision, RevisionError

WORKER = pathlib.Path(__file__).with_name("worker.py")
ORDER = "ABBA"
TURN_S = 0.02  # a sample this long or longer: one per turn
DISCARD = 1  # untimed samples first in each turn of shorter samples
STOP_WAIT_S = 2.0


class WorkerDied(Exception):
    """The worker process ended (a crash in the code measured, a kill): its side of the case failed."""


class Worker:
    """One revision's worker process (kvbench/compare/worker.py) and its JSON-line pipe."""

    def __init__(self, rev: Revision):
        self.rev = rev
        self.proc: subprocess.Popen | None = None
        self.hello: dict = {}

    def start(self) -> None:
        """Start the process (without waiting for it: `wait_ready` reads its first reply)."""
        # Own session: a Ctrl-C at the terminal reaches the parent only, which stops the workers itself.
        self.proc = subprocess.Popen([sys.executable, "-P", str(WORKER), str(self.rev.tree)], cwd=self.rev.tree,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     start_new_session=True)

    def wait_ready(self) -> dict:
        """The worker's first reply: its revision's device, mode and versions, or why it cannot be used."""
        try:
            self.hello = self.receive()
        except WorkerDied as exc:
            raise RevisionError(f"{self.rev.describe()}: its worker did not start ({exc})") from None
        if not self.hello.get("ok"):
            why = "too old for kvbench compare: " if self.hello.get("too_old") else ""
            error = RevisionError(f"{self.rev.describe()}: {why}{self.hello.get('error')}")
            error.exit_code = self.hello.get("exit_code", 2)
            raise error
        return self.hello

    def send(self, op: str, **fields) -> None:
        try:
            self.proc.stdin.write(json.dumps({"op": op, **fields}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise WorkerDied(self._ended()) from None

    def receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerDied(self._ended())
        return json.loads(line)

    def ask(self, op: str, **fields) -> dict:
        self.send(op, **fields)
        return self.receive()

    def _ended(self) -> str:
        try:
            code = self.proc.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            return "its worker stopped answering"
        return f"its worker process died ({f'signal {-code}' if code < 0 else f'exit code {code}'})"

    def restart(self) -> None:
        self.stop()
        self.start()
        self.wait_ready()

    def stop(self) -> None:
        """End the process: close its pipes, terminate it, kill it if it does not end."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        for close in (proc.stdin, proc.stdout):
            try:
                close.close()
            except OSError:
                pass
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclasses.dataclass(frozen=True)
class Combination:
    """One benchmark of the suite with one parameter combination, named as asv names it."""

    cls: str
    method: str
    params: tuple

    @property
    def benchmark(self) -> str:
        return f"benchmarks.{self.cls}.{self.method}"

    @property
    def name(self) -> str:
        return f"{self.benchmark}({', '.join(repr(p) for p in self.params)})"


def combinations(listing: list[dict], patterns: list) -> list[Combination]:
    """Every (class, time_* method, parameters) of a worker's `list`, kept when a pattern matches (asv's -b: a
    search in `benchmarks.Class.method(param, ...)`, params as repr); all of them without patterns."""
    out = []
    for bench in listing:
        for method in bench["methods"]:
            for params in itertools.product(*bench["params"]):
                c = Combination(bench["class"], method, tuple(params))
                if not patterns or any(p.search(c.name) for p in patterns):
                    out.append(c)
    return out


@dataclasses.dataclass
class Side:
    """One revision's part of a combination: how it ended, and its samples (per-call seconds) by allocation and
    round."""

    status: str = "ok"  # ok, skipped, failed, missing (no such benchmark in this revision)
    reason: str | None = None
    mode: str | None = None
    version: object = None
    calls_per_sample: list[int] = dataclasses.field(default_factory=list)  # one per allocation
    steps: dict = dataclasses.field(default_factory=dict)  # the worker's own: allocate, verify, ... (seconds)
    allocations: list[list[list[float]]] = dataclasses.field(default_factory=list)  # [allocation][round][sample]

    @property
    def samples(self) -> list[float]:
        return [s for rounds in self.allocations for r in rounds for s in r]

    @property
    def median_s(self) -> float | None:
        return statistics.median(self.samples) if self.status == "ok" and self.samples else None

    def fail(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason


@dataclasses.dataclass
class Outcome:
    """A combination compared: ratio = the geometric mean over allocations of each allocation's median round
    ratio (B's median over A's in one round)."""

    combination: Combination
    a: Side
    b: Side
    steps: dict[str, float] = dataclasses.field(default_factory=dict)  # wall seconds: prepare, rounds, ...

    @property
    def wall_s(self) -> float:
        return round(sum(self.steps.values()), 3)

    @property
    def measured(self) -> bool:
        return self.a.median_s is not None and self.b.median_s is not None

    def round_ratios(self) -> list[list[float]]:
        """Per allocation, each round's ratio."""
        if not self.measured:
            return []
        return [[statistics.median(b) / statistics.median(a) for a, b in zip(ra, rb)]
                for ra, rb in zip(self.a.allocations, self.b.allocations)]

    @property
    def allocation_ratios(self) -> list[float]:
        return [statistics.median(r) for r in self.round_ratios() if r]

    @property
    def ratio(self) -> float | None:
        ratios = self.allocation_ratios
        return math.exp(statistics.fmean(math.log(r) for r in ratios)) if ratios else None


class Session:
    """The two workers of a comparison. `measure(combination)` runs one combination interleaved."""

    def __init__(self, a: Revision, b: Revision):
        self.workers = {"a": Worker(a), "b": Worker(b)}
        self.allocations = 0  # made so far in the session (each one's timing runs on the next core)

    def start(self) -> None:
        for w in self.workers.values():
            w.start()
        for w in self.workers.values():
            w.wait_ready()

    def stop(self) -> None:
        try:
            self.workers["a"].stop()
        finally:
            self.workers["b"].stop()

    def restart(self) -> None:
        """New worker processes on both sides (a fresh heap, stack and address-space layout, as asv's fresh
        process per benchmark has)."""
        self.stop()
        self.start()

    def cpu(self) -> int | None:
        """The core both sides of an allocation run on while timed, the next core for the next allocation (on a
        CPU device only): on a shared host the cores' speeds differ and change, and a worker the scheduler kept on
        the faster core would look faster. Not a core per round: a side's first turn on a new core reads cold."""
        hello = self.workers["b"].hello
        cpus = hello.get("cpus")
        if not cpus or hello.get("device") != "cpu":
            return None
        self.allocations += 1
        return cpus[self.allocations % len(cpus)]

    def listing(self, side: str = "b") -> list[dict]:
        return self.workers[side].ask("list")["benchmarks"]

    def _all(self, sides: dict[str, Side], op: str, **fields) -> dict[str, dict]:
        """Send `op` to every worker whose side is still ok, then collect the replies (the workers work at once:
        for steps that are not timed). A worker that died fails its side and is started again."""
        live = [k for k, s in sides.items() if s.status == "ok"]
        replies = {}
        for k in live:
            try:
                self.workers[k].send(op, **fields)
            except WorkerDied as exc:
                replies[k] = self._died(k, exc)
        for k in live:
            if k not in replies:
                try:
                    replies[k] = self.workers[k].receive()
                except WorkerDied as exc:
                    replies[k] = self._died(k, exc)
        for k, reply in replies.items():
            self._apply(sides[k], reply)
        return replies

    def _one(self, sides: dict[str, Side], k: str, op: str, **fields) -> dict:
        try:
            reply = self.workers[k].ask(op, **fields)
        except WorkerDied as exc:
            reply = self._died(k, exc)
        self._apply(sides[k], reply)
        return reply

    def _died(self, k: str, exc: WorkerDied) -> dict:
        """The reply a dead worker stands for; a new worker takes its place for the next combinations."""
        self.workers[k].restart()
        return {"status": "failed", "reason": str(exc)}

    @staticmethod
    def _apply(side: Side, reply: dict) -> None:
        if reply.get("status") != "ok":
            side.fail(reply.get("status", "failed"), reply.get("reason"))

    def measure(self, c: Combination, rounds: int, samples: int, allocations: int = 1, settle: float = 1.0
                ) -> Outcome:
        """Compare `c` on up to `allocations` allocations, `rounds` rounds each: after the first, another (in new
        worker processes) only while the ratio so far is beyond `settle` either way."""
        steps = timing_steps()
        sides = {"a": Side(), "b": Side()}
        outcome = Outcome(c, sides["a"], sides["b"], steps.seconds)
        for n in range(allocations):
            if n:
                with steps("restart"):
                    self.restart()
            self._allocation(c, sides, rounds, samples, steps, check=n == 0)
            if not outcome.measured or 1 / settle <= outcome.ratio <= settle:
                break
        for side in sides.values():
            if side.status != "ok":
                side.allocations = []
        return outcome

    def _allocation(self, c: Combination, sides: dict[str, Side], rounds: int, samples: int, steps,
                    check: bool) -> None:
        """One allocation of the case on each side: prepared, calibrated, `rounds` rounds, released."""
        with steps("prepare"):
            replies = self._all(sides, "prepare", **{"class": c.cls, "method": c.method, "params": list(c.params)})
        for k, reply in replies.items():
            sides[k].mode, sides[k].version = reply.get("mode"), reply.get("version")
        cpu = self.cpu()
        lasting = []
        with steps("calibrate"):
            for k in sides:  # one at a time: each calibration is timed
                if sides[k].status == "ok":
                    reply = self._one(sides, k, "calibrate", cpu=cpu)
                    sides[k].calls_per_sample.append(reply.get("calls_per_sample"))
                    lasting.append(reply.get("sample_s", 0.0))
        n, discard = turn(max(lasting, default=0.0), samples)
        with steps("rounds"):
            for side in sides.values():
                side.allocations.append([])
            for _ in range(rounds):
                taken = {k: [] for k in sides}
                for k in ORDER.lower():
                    if sides[k].status == "ok":
                        reply = self._one(sides, k, "measure", n=n, discard=discard, cpu=cpu)
                        taken[k] += reply.get("samples", [])
                for k, side in sides.items():
                    side.allocations[-1].append(taken[k])
        if check:  # the timed path: once per combination (the code is the same whatever the allocation)
            with steps("check"):
                for k, reply in self._all(sides, "check").items():
                    sides[k].steps = reply.get("steps") or {}
        with steps("release"):
            self._all({k: Side() for k in sides}, "release")


def turn(sample_s: float, most: int) -> tuple[int, int]:
    """(samples, untimed samples first) of each turn, the same for both sides: `most` after one untimed sample
    (the first after the other side ran read 3-5 % slow on the 2-core host); a single sample and none untimed
    where one sample lasts TURN_S or more (a slow case, a cold-L2 rotation), whose first call is a small part."""
    return (1, 0) if sample_s >= TURN_S else (most, DISCARD)


def timing_steps():
    """A context manager factory that adds each named step's wall seconds to its `seconds` dict."""
    seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def step(name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - start, 3)

    step.seconds = seconds
    return step


def load() -> list[float]:
    """The host's load averages (1, 5, 15 min): other work on a shared host is what a comparison competes with."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []
