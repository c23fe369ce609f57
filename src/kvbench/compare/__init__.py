"""`kvbench compare A B`: the asv suite of two git revisions, timed interleaved in one session.

Why: on a shared host the machine itself drifts. On the 2-core CPU host kvbench is developed on, memory bandwidth
moved by tens of % over tens of seconds, and asv, which runs all of A and then all of B, compared two runs of
identical code as 10-14 % apart (22 of 137 flagged at 1.10; notes/measurement.md, "CPU"). Here each side has one
long-lived worker process importing its own revision's kvbench and benchmarks (kvbench.compare.worker), and for each
combination the two take turns within a fraction of a second (A B B A per round), so drift meets both alike and
the paired per-round ratios cancel it. What drift does not explain, memory placement (the same case allocated
twice runs up to ~12 % apart on that host), is averaged over fresh allocations where one allocation's ratio is
off (kvbench.compare.session).

What is measured is what asv measures: each `time_*` benchmark's case (its class's `case(*params)`), prepared and
verified by that revision's `runner.prepare`, timed by its sampler in the class's mode (the suite's primary mode:
`cudagraph` on CUDA, `no_graph` CPU time on a CPU), per-call seconds, then the timed path verified. `track_*`
benchmarks are not compared: KVCacheWriteBF16's x ideal is KVCacheWrite's bf16 time over a constant of the machine,
already compared there.
"""

from __future__ import annotations

import signal

from kvbench.compare import revisions, session
from kvbench.compare.revisions import Revision, RevisionError
from kvbench.compare.session import Combination, Outcome


SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Comparison:
    """Revisions resolved on creation (a bad one fails before any work); in a `with` block, `start` exports both
    trees into one temporary folder and starts both workers; leaving the block stops them and removes the folder,
    however it is left."""

    def __init__(self, repo: str, a: str, b: str):
        self.repo = revisions.repository(repo)
        self.a = revisions.resolve(self.repo, "A", a)
        self.b = revisions.resolve(self.repo, "B", b)
        self.root = None
        self.session: session.Session | None = None
        self.outcomes: list[Outcome] = []

    def __enter__(self) -> Comparison:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers and remove the trees; SIGINT and SIGTERM wait until it is done."""
        held = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS) if hasattr(signal, "pthread_sigmask") else None
        try:
            if self.session is not None:
                self.session.stop()
        finally:
            revisions.remove(self.root)
            self.root = None
            if held is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def start(self) -> dict:
        """Export both revisions and start their workers; returns B's worker's facts (device, mode, versions)."""
        self.root = revisions.make_root()
        for rev in (self.a, self.b):
            revisions.export(self.repo, rev, self.root)
        self.session = session.Session(self.a, self.b)
        self.session.start()
        return self.session.workers["b"].hello

    def select(self, patterns: list) -> list[Combination]:
        """B's combinations that the patterns select (asv's -b), each to be asked of both revisions."""
        return session.combinations(self.session.listing("b"), patterns)

    def measure(self, c: Combination, rounds: int, samples: int, allocations: int = 1, settle: float = 1.0
                ) -> Outcome:
        outcome = self.session.measure(c, rounds, samples, allocations, settle)
        self.outcomes.append(outcome)
        return outcome


__all__ = ["Comparison", "Combination", "Outcome", "Revision", "RevisionError"]
