"""Per-call time on a CPU (the `no_graph` mode of a CPU-only machine), set up so that it can be tracked on a small
shared host: n calls per sample, divided by n, timed with the process's CPU clock (time.process_time) when the
write runs on one thread, with the wall clock (perf_counter) when KVBENCH_CPU_THREADS asks for more."""

from __future__ import annotations

import ctypes
import time

import torch

from kvbench import config
from kvbench.measure.timing import MAX_EAGER_CALLS, Sampler, Writer

# CPU set-up (configure_cpu; measured on a 2-core host shared with other work, notes/measurement.md "CPU"):
# - one intra-op thread: with one per core, a parallel region waits at its barrier for a descheduled thread for a
#   scheduler slice, and per-call times landed in modes up to 114x apart; KVBENCH_CPU_THREADS overrides;
# - glibc's mmap and trim thresholds above the grid's per-call temporaries, below its caches: otherwise every call
#   got its temporaries back from the kernel, page-faulted (32,772 minor faults per 1024-token torch call);
# - samples of >= 10 ms, not 1 ms: a scheduler tick is 4 ms;
# - the process's CPU clock, not the wall clock: wall time also counts the slices the thread waits while another
#   tenant of the 2 cores runs (or the hypervisor steals the vCPU); with one working thread, the process's CPU time
#   is the whole cost of the call (page faults included) and nothing else (and a library that ran threads of its
#   own despite the setting would be counted, not missed, as the calling thread's clock alone would miss it).
CPU_THREADS = 1
MMAP_THRESHOLD = 256 << 20
TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_cpu_configured: dict = {}
CPU_TARGET_SAMPLE_S = 10e-3


def clock_name(threads: int) -> str:
    """The clock CPU samples are timed with: the process's CPU time when one thread writes, else wall time."""
    return "process_time" if threads == 1 else "perf_counter"


def configure_cpu() -> dict:
    """Once per process: torch's intra-op threads (CPU_THREADS, or KVBENCH_CPU_THREADS) and glibc's mmap/trim
    thresholds (a no-op elsewhere). Returns what was set."""
    if not _cpu_configured:
        threads = config.positive_int("KVBENCH_CPU_THREADS", CPU_THREADS)
        torch.set_num_threads(threads)
        _cpu_configured["threads"] = torch.get_num_threads()
        _cpu_configured["clock"] = clock_name(_cpu_configured["threads"])
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
                 min_calls: int = 1, check=None):
        super().__init__()
        self.config = configure_cpu()
        self.clock = time.process_time if self.config["clock"] == "process_time" else time.perf_counter
        self.write = write
        write()
        self._calibrate(1, target_s, max_calls, min_calls)
        if check is not None:  # kvbench.measure.timing.sampler
            check(self.run_once)
            self.run_once()  # untimed: the check's work is not what the first sample should follow
        self._reset()

    def run_once(self) -> None:
        for _ in range(self.calls_per_sample):
            self.write()

    def sample(self) -> None:
        start = self.clock()
        self.run_once()
        self._add((self.clock() - start) / self.calls_per_sample)


