"""What a sweep says while it runs: an estimate of its cost before it starts, a line every PROGRESS_EVERY_S seconds
for a case that runs long, and each repeated reason once with its count at the end."""

from __future__ import annotations

import contextlib
import sys
import threading

from kvbench.measure.cpu_sampler import CPU_TARGET_SAMPLE_S
from kvbench.measure.timing import TARGET_SAMPLE_S

PROGRESS_EVERY_S = 10.0
# Rough per-case costs for the estimate (seen on a 2-core AVX2 host and an H200): on a CPU the torch reference and
# vLLM's CPU op move their bytes at about a tenth of the copy rate (bf16, 128 heads: 65 and 47 ms at 1024 tokens,
# 1.9 GB/s copy 18.9 GB/s); a fresh CUDA process with its verification and graph set-up costs about 1 s.
CPU_RATE = 0.1
CUDA_CASE_S = 1.0
CPU_CASE_S = 0.2
WITHIN_S = 180.0  # a sweep estimated to take longer says how to narrow it


def case_seconds(case, iters: int, copy_bytes_per_s: float) -> float:
    """About how long measuring `case` takes: set-up (allocation, verification: a few calls and passes over the
    cache) and `iters` samples of at least the sampler's target length."""
    per_call = case.bytes_moved / (copy_bytes_per_s * (CPU_RATE if case.device == "cpu" else 0.9))
    if case.device == "cpu":
        setup = CPU_CASE_S + 10 * per_call + 3 * case.cache_bytes / copy_bytes_per_s
        return setup + iters * max(CPU_TARGET_SAMPLE_S, per_call)
    return CUDA_CASE_S + iters * max(TARGET_SAMPLE_S, per_call)


def estimate_line(cases: list, iters: int, copy_bytes_per_s: float, memory_bytes: int) -> str:
    """`estimate: 20 cases, about 1 min 10 s (the longest ~9 s), at most 1.1 GiB`, with how to narrow it when it
    is long."""
    if not cases:
        return "estimate: nothing to measure"
    each = [case_seconds(c, iters, copy_bytes_per_s) for c in cases]
    total = sum(each)
    line = (f"estimate: {len(cases)} cases, {_duration(total)} (the longest {_duration(max(each))}), "
            f"at most {_size(memory_bytes)} of memory for one case")
    if total > WITHIN_S:
        line += "; narrow it with --num-tokens, --implementation or --iters"
    return line


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{max(1, round(nbytes / 2**20))} MiB"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under 1 s"
    seconds = round(seconds)
    return f"about {seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"about {seconds} s"


@contextlib.contextmanager
def heartbeat(label: str, every_s: float = PROGRESS_EVERY_S, out=None):
    """While the block runs, print `label: still running after N s` to stderr every `every_s` seconds."""
    done = threading.Event()
    out = out or sys.stderr

    def beat():
        waited = 0.0
        while not done.wait(every_s):
            waited += every_s
            print(f"{label}: still running after {waited:.0f} s", file=out, flush=True)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def reason_counts(results) -> list[str]:
    """`skipped x16: vllm: runs on cuda only, not cpu`: each distinct reason of the skipped and failed rows once,
    most frequent first."""
    counts: dict[tuple[str, str], int] = {}
    for r in results:
        if r.status != "ok":
            key = (r.status, r.message or "?")
            counts[key] = counts.get(key, 0) + 1
    return [f"{status} x{n}: {message}" for (status, message), n in sorted(counts.items(), key=lambda kv: -kv[1])]
