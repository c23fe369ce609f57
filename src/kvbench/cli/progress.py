"""What a sweep says while it runs: an estimate of its cost before it starts, a line every PROGRESS_EVERY_S seconds
for a case that runs long, and each repeated reason once with its count at the end."""

from __future__ import annotations

import contextlib
import sys
import threading

from kvbench.measure.cpu_sampler import CPU_TARGET_SAMPLE_S
from kvbench.measure.timing import TARGET_SAMPLE_S

PROGRESS_EVERY_S = 10.0
# Rough per-case costs for the estimate (seen on a 2-core AVX2 host and an H200): on a CPU the torch reference moves
# its bytes at a fraction of the copy rate that depends on the op (the kv write, bf16, 128 heads: 68 ms at 1024
# tokens, 2.0 GB/s against a copy rate of 18.9 GB/s: 0.1; the quantizing ops far less: each op's fraction below,
# measured so at 1024 tokens, 2026-12-05; fp8_ds_mla's 0.026 for mla); a fresh CUDA process with its verification
# and graph set-up costs about 1 s.
CPU_RATE = 0.1
CPU_RATE_BY_OP = {"kv": 0.1, "mla": 0.026, "indexer": 0.016, "token-head-quant": 0.011, "convert-fp8": 0.032,
                  "gather": 0.5, "cp-gather": 0.5, "swap-blocks": 0.25, "indexer-gather": 0.048,
                  "upconvert-gather": 0.032, "mla-grouped": 0.053, "concat-mla-q": 0.38, "mla-rope": 0.026}
CUDA_CASE_S = 1.0
CPU_CASE_S = 0.2
WITHIN_S = 180.0  # a sweep estimated to take longer says how to narrow it


def case_seconds(case, iters: int, copy_bytes_per_s: float) -> float:
    """About how long measuring `case` takes: set-up (allocation, verification: a few calls and passes over the
    cache) and `iters` samples of at least the sampler's target length; a cold-L2 case's sample calls each set of
    its rotation once at least (kvbench.runner.rotation_size: on a CPU with a large last-level cache, dozens)."""
    from kvbench.errors import Unavailable
    from kvbench.runner import rotation_size

    try:
        sets = rotation_size(case)
    except Unavailable:  # skipped at once with its reason
        return 0.0
    rate = CPU_RATE_BY_OP.get(case.OP, CPU_RATE) if case.device == "cpu" else 0.9
    per_call = case.bytes_moved / (copy_bytes_per_s * rate)
    if case.device == "cpu":
        setup = CPU_CASE_S + (10 + sets) * per_call + 3 * case.cache_bytes / copy_bytes_per_s
        return setup + iters * max(CPU_TARGET_SAMPLE_S, sets * per_call)
    return CUDA_CASE_S + iters * max(TARGET_SAMPLE_S, sets * per_call)


def estimate_line(cases: list, iters: int, copy_bytes_per_s: float, memory_bytes: int) -> str:
    """`estimate: 20 cases, about 1 min 10 s (the longest ~9 s), at most 1.1 GiB`, with how to narrow it when it
    is long."""
    if not cases:
        return "estimate: nothing to measure"
    each = [case_seconds(c, iters, copy_bytes_per_s) for c in cases]
    total = sum(each)
    count = f"{len(cases)} case{'s' if len(cases) != 1 else ''}"
    line = (f"estimate: {count}, {_duration(total)} (the longest {_duration(max(each))}), "
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
