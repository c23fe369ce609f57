"""Per-call time of a writer: the measuring contract of kvbench.

A Sampler makes timed samples of one writer (a zero-argument call that performs one write):
- `cudagraph` (CUDA, GraphSampler): K back-to-back calls captured in one CUDA graph, K sized so that one replay
  holds about TARGET_SAMPLE_S of GPU work (at most MAX_GRAPH_CALLS). A sample is one replay between two CUDA
  events divided by K: per-call *device* time, launch gaps hidden as in a model's graph replay. Before the start
  event a short GPU sleep is queued so the host's launch latency is not timed; after each sample an untimed ~1 ms
  spin keeps the GPU busy through the host's gap before the next one.
- `no_graph` on CUDA (EagerCudaSampler): n eager calls between two CUDA events, divided by n: per-call time *with*
  launch overhead.
- `no_graph` on CPU (CpuSampler): n calls timed with the process's CPU clock, divided by n (CPU time per call;
  wall clock if KVBENCH_CPU_THREADS > 1), samples of ~10 ms, one intra-op thread, and glibc's allocator kept from
  handing temporaries back to the kernel each call (kvbench.measure.cpu_sampler).
`sample()` queues a sample, `elapsed()` synchronises and returns the running total of per-call seconds (so it
serves as asv's timer), `measure(n)` returns n per-call times, and `run_once()` runs exactly the work of a sample
without timing it (for verifying the timed path). Inputs and slots are whatever the writer uses: the same every
call for a warm L2, a rotation for a cold one. Why each step is there (warm-up, calibration from a probe graph,
the spin) and what it was measured to fix: notes/measurement.md, "How a sample is taken".
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from typing import Callable

import torch

from kvbench.errors import CaseError, Unavailable

Writer = Callable[[], None]  # one call of the code under test
Check = Callable[[Writer], None]  # called with a sampler's run_once before its warm-up (timing.sampler)

MODES = ("cudagraph", "no_graph")
TARGET_SAMPLE_S = 1e-3
MAX_GRAPH_CALLS = 1000
MAX_EAGER_CALLS = 1000
SLEEP_CYCLES = 100_000  # ~50 us at H100 clocks: longer than a graph launch takes on the host
TRAIL_CYCLES = 2_000_000  # ~1 ms untimed spin after each sample and after the warm-up
# A GPU that has just been idle runs the first replays slow while NVML still reports its top clock, so graphs are
# replayed before they are timed: the probe graph for PROBE_WARMUP_S before calibrating, the timed graph for
# REWARM_S before its samples; an eager CUDA sampler's calls for WARMUP_S. The slow replays lasted up to ~13 ms
# after an idle GPU (H100); 30 ms each (50 ms until 2026-11-28): they were 40 % of a batched case's cost.
WARMUP_S = 0.1
PROBE_WARMUP_S = 0.03
REWARM_S = 0.03
PROBE_CALLS = 8  # calls in the probe graph that K is calibrated on (1 where one eager call already fills a sample)


class Phases(dict):
    """Wall seconds spent in named steps of preparing and sampling a case (asv's per-process state log shows
    where a benchmark process's time goes)."""

    @contextlib.contextmanager
    def step(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = round(self.get(name, 0.0) + time.perf_counter() - start, 4)


def calls_for(target_s: float, per_call_s: float, cap: int) -> int:
    """How many calls make one sample of about `target_s`, between 1 and `cap`."""
    return max(1, min(cap, math.ceil(target_s / max(per_call_s, 1e-9))))


class Sampler:
    """Timed samples of one writer. `sample()` queues one; `elapsed()` syncs and returns total per-call seconds."""

    mode = ""
    calls_per_sample = 1

    def __init__(self):
        self.phases = Phases()
        self._reset()

    def _reset(self) -> None:
        """Forget the set-up's samples: `samples` and the total hold only what was taken since."""
        self._total = 0.0
        self.samples: list[float] = []  # per-call seconds of each sample, in order

    def _add(self, per_call_s: float) -> None:
        self._total += per_call_s
        self.samples.append(per_call_s)

    def sample(self) -> None:
        raise NotImplementedError

    def run_once(self) -> None:
        """The work of one sample, untimed."""
        raise NotImplementedError

    def elapsed(self) -> float:
        return self._total

    def _calibrate(self, first: int, target_s: float, max_calls: int, min_calls: int) -> None:
        """Set calls_per_sample so a sample lasts about target_s, from 3 samples of `first` calls."""
        self.calls_per_sample = first
        estimate = statistics.median(self.measure(3))
        self.calls_per_sample = max(min_calls, calls_for(target_s, estimate, max_calls))

    def measure(self, n: int) -> list[float]:
        """Per-call seconds of `n` samples."""
        out = []
        for _ in range(n):
            before = self.elapsed()
            self.sample()
            out.append(self.elapsed() - before)
        return out


def event_span(work) -> tuple[torch.cuda.Event, torch.cuda.Event]:
    """Record CUDA events around `work()` on the current stream (nothing is synchronised)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    work()
    end.record()
    return start, end


def cuda_seconds(work) -> float:
    """Device seconds of `work()` between two CUDA events, waiting for it to finish."""
    start, end = event_span(work)
    end.synchronize()
    return start.elapsed_time(end) / 1e3


class _CudaEventSampler(Sampler):
    def __init__(self):
        super().__init__()
        self._pending: list[tuple[torch.cuda.Event, torch.cuda.Event, int]] = []

    def _span(self, work, divisor: int) -> None:
        self._pending.append((*event_span(work), divisor))

    def elapsed(self) -> float:
        if self._pending:
            self._pending[-1][1].synchronize()
            for start, end, k in self._pending:
                self._add(start.elapsed_time(end) / 1e3 / k)
            self._pending.clear()
        return self._total


def _warm_up(write: Writer, calls: int = 3) -> None:
    """Run eagerly before any capture (lazy initialisation, compilation), on the current stream as vLLM's script
    does (a side-stream warm-up left the torch reference's graphs 9 % slower)."""
    for _ in range(calls):
        write()
    torch.cuda.synchronize()


def _eager_estimate(write: Writer, calls: int = 3) -> float:
    """Seconds of one eager call between CUDA events, the least of `calls` (a host stall only adds time): exact for
    long calls, too high for short ones, so it only sizes the probe graph, never K itself (a stalled estimate once
    made graphs of one call, which read 4-5 % high)."""
    return min(cuda_seconds(write) for _ in range(calls))


def _busy(work, seconds: float, in_flight: int = 2) -> None:
    """Keep the GPU busy with `work` for about `seconds`: up to `in_flight` calls queued at a time, so that the GPU
    never waits for the host, whether a call takes microseconds or milliseconds."""
    end = time.perf_counter() + seconds
    queued: list[torch.cuda.Event] = []
    while time.perf_counter() < end:
        work()
        queued.append(torch.cuda.Event())
        queued[-1].record()
        if len(queued) > in_flight:
            queued.pop(0).synchronize()
    torch.cuda.synchronize()


def _capture(write: Writer, calls: int) -> torch.cuda.CUDAGraph:
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            write()
    graph.replay()
    torch.cuda.synchronize()
    return graph


_primed: list[bool] = []  # this process has primed its graph state (a forked child starts unprimed: CUDA is new)


def prime_graphs(count: int = 3) -> None:
    """Once per process, capture and drop `count` one-kernel CUDA graphs. Once a process has captured a third graph,
    replays of a tiny kernel's graph run ~0.1-0.2 us slower per call, older graphs too, and nothing undoes it
    (notes/measurement.md); a served model captures dozens. Every GraphSampler primes first, so each case is timed
    in that state whether it is a batch's first or its hundredth (kvbench.asv.batch) or alone in a fresh process."""
    if _primed:
        return
    scratch = torch.zeros(1, device="cuda")
    for _ in range(count):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            scratch.add_(1)
        graph.replay()
        del graph
    torch.cuda.synchronize()
    _primed.append(True)


class GraphSampler(_CudaEventSampler):
    mode = "cudagraph"

    def __init__(self, write: Writer, target_s: float = TARGET_SAMPLE_S, max_calls: int = MAX_GRAPH_CALLS,
                 min_calls: int = 1, check: Check | None = None):
        super().__init__()
        self._sleep = getattr(torch.cuda, "_sleep", None)
        with self.phases.step("prime"):
            prime_graphs()
        with self.phases.step("warm_up"):
            _warm_up(write)
        with self.phases.step("calibrate"):  # only sizes the probe: eager timing includes launch gaps and stalls
            probe_calls = PROBE_CALLS if _eager_estimate(write) < target_s else 1
        with self.phases.step("capture"):
            self.graph = _capture(write, probe_calls)
        self.calls_per_sample = probe_calls
        with self.phases.step("clock_warm_up"):
            _busy(self.graph.replay, PROBE_WARMUP_S)
        with self.phases.step("calibrate"):
            estimate = min(self.measure(5))  # device time of warm replays; stalls only add time
        k = max(min_calls, calls_for(target_s, estimate, max_calls))
        if k != probe_calls:
            with self.phases.step("capture"):
                self.graph = _capture(write, k)
            self.calls_per_sample = k
        if check is not None:  # the timed graph, checked before the clock warm-up that must precede the samples
            check(self.run_once)
        with self.phases.step("clock_warm_up"):
            _busy(self.graph.replay, REWARM_S)
        self._spin(TRAIL_CYCLES)
        self._reset()

    def _spin(self, cycles: int) -> None:
        if self._sleep is not None:
            self._sleep(cycles)

    def run_once(self) -> None:
        self.graph.replay()

    def sample(self) -> None:
        self._spin(SLEEP_CYCLES)
        self._span(self.graph.replay, self.calls_per_sample)
        self._spin(TRAIL_CYCLES)


class EagerCudaSampler(_CudaEventSampler):
    mode = "no_graph"

    def __init__(self, write: Writer, target_s: float = TARGET_SAMPLE_S, max_calls: int = MAX_EAGER_CALLS,
                 min_calls: int = 1, check: Check | None = None):
        super().__init__()
        self.write = write
        _warm_up(write)
        self._calibrate(4, target_s, max_calls, min_calls)
        if check is not None:
            check(self.run_once)
        _busy(self._calls, WARMUP_S)
        self._reset()

    def _calls(self) -> None:
        for _ in range(self.calls_per_sample):
            self.write()

    def run_once(self) -> None:
        self._calls()

    def sample(self) -> None:
        self._span(self._calls, self.calls_per_sample)


def check_mode(mode: str, device: str) -> None:
    """Raise CaseError for an unknown mode, Unavailable for one this device cannot time (cudagraph on CPU)."""
    if mode not in MODES:
        raise CaseError(f"mode {mode!r} is not supported; choose one of: {', '.join(MODES)}")
    if device == "cpu" and mode == "cudagraph":
        raise Unavailable("mode 'cudagraph' needs a CUDA device; on cpu use mode 'no_graph'")


def sampler(mode: str, write: Writer, device: str, min_calls: int = 1, check: Check | None = None) -> Sampler:
    """The sampler for `mode` on `device` (cudagraph needs CUDA); each sample makes at least `min_calls` calls.
    `check`, where given, is called with the sampler's `run_once` once the sampler is set up (its graph made and
    calibrated), before its warm-up and its samples: to verify the very work that will be timed."""
    check_mode(mode, device)
    if device == "cpu":
        from kvbench.measure.cpu_sampler import CpuSampler

        return CpuSampler(write, min_calls=min_calls, check=check)
    kind = GraphSampler if mode == "cudagraph" else EagerCudaSampler
    return kind(write, min_calls=min_calls, check=check)
