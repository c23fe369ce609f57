"""One asv run's measured cases, shared between its benchmark processes, and the batch that measures a group of
them in one process on a GPU.

asv runs every (benchmark, parameters) combination in a fresh process forked from one parent. On a GPU each such
process pays ~0.6 s before its first sample (CUDA context, first use of each kernel, vLLM's library) and ~0.12 s
to exit, and a default suite of ~1100 combinations spent most of its time there. So the first process of a benchmark
class measures every case of the class (all implementations) that this run has not measured yet,
one after another, each as a lone process would (its own tensors, samples and verification: the timed path
checked whole before the samples and on its rows after them, see kvbench.runner), and files each outcome in the run's store: samples, or why there are none. Every
later process of the run whose case is in the store hands those samples to asv and touches no GPU; a case
another benchmark class describes identically (KVCacheWriteBF16's x ideal, Shapes' and Patterns' default cases)
is measured once. KVBENCH_BATCH=0 measures one case per process (each still leaves its samples in the store).

Graph state: every graph sampler first captures and drops three small CUDA graphs once per process
(kvbench.measure.timing.prime_graphs), so a batch's first case is timed in the same state as its hundredth.
Selecting single parameter combinations with `asv run -b` still measures their whole class here: use
KVBENCH_BATCH=0 for that.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import os
import tempfile
import time

from kvbench import config, defects, files, runner
from kvbench.measure import bandwidth, machine


def enabled(device: str) -> bool:
    """By default batches run on CUDA (a CPU process has no context to share); KVBENCH_BATCH=0 or 1 decides."""
    if config.text("KVBENCH_BATCH") is None:
        return device == "cuda"
    return config.flag("KVBENCH_BATCH")


def folder() -> str:
    """This run's store: every benchmark process of one `asv run` is forked from the same parent, so a folder
    named after that parent (its pid and start time) is theirs alone."""
    parent = os.getppid()
    try:
        with open(f"/proc/{parent}/stat") as f:
            started = f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        started = "0"
    return os.path.join(tempfile.gettempdir(), f"kvbench-asv-run-{parent}-{started}")


def _path(case, implementation: str, mode: str) -> str:
    key = hashlib.sha1(f"{case.label()}|{implementation}|{mode}".encode()).hexdigest()[:20]
    return os.path.join(folder(), f"{key}.json")


def write(case, implementation: str, mode: str, record: dict) -> None:
    """File one case's outcome: {"status": ok|skipped|failed, "reason", "samples" (per-call s), "ideal_s", "log"}.
    A store that cannot be written only costs time: the case is measured again where it is needed."""
    try:
        path = _path(case, implementation, mode)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with files.atomic(path) as f:
            json.dump(record, f)
    except OSError:
        pass


def read(case, implementation: str, mode: str) -> dict | None:
    """The case's outcome in this run, or None when nobody measured it yet."""
    try:
        with open(_path(case, implementation, mode)) as f:
            found = json.load(f)
    except (OSError, ValueError):
        return None
    ok = found.get("status") == "ok" and found.get("samples") and found.get("ideal_s")
    return found if ok or found.get("status") in ("skipped", "failed") else None


def record_of(result: runner.Result, ideal_s: float | None) -> dict:
    """A sweep row as the store keeps it (what asv and the state log need; a reason in asv's words: the
    KVBENCH_* variable where the command line's message names a flag, config.for_asv)."""
    log = {"steps_s": result.steps or {}, "calls_per_sample": result.calls_per_sample, **(result.gpu_state or {})}
    reason = config.for_asv(result.message) if result.message else result.message
    return {"status": result.status, "reason": reason, "samples": [s / 1e6 for s in result.samples_us],
            "ideal_s": ideal_s, "warnings": result.warnings, "log": log, "batch_pid": os.getpid()}


def _healthy() -> bool:
    """Whether the CUDA context still works after a case that crashed (an illegal address poisons it)."""
    import torch

    try:
        torch.zeros(1, device="cuda").add_(1)
        torch.cuda.synchronize()
        return True
    except Exception:
        return False


def lead(cases, mode: str, samples: int, device: str, max_tokens: int, budget_s: float) -> int:
    """Measure `cases` ((case, implementation) pairs, the leading process's own first) that are not in the store
    yet, and file each. Before a case is measured it is filed as failed ("the batch process ended while measuring
    this case"), so that if the process dies on it (a crash, a kill, asv's timeout) that case alone is reported and
    the next process of the class leads a batch of the cases after it. Stops when the GPU is unusable after a failure, or after budget_s
    (under asv's timeout for this process): the rest are led again by a later process. Returns how many were
    measured."""
    bw = bandwidth.copy_bandwidth(device, machine.device_key(machine.info(device)))
    start = time.perf_counter()
    gc.collect()
    gc.freeze()  # what is loaded by now stays: the collection after each case looks at that case's objects only
    done = 0
    try:
        for case, implementation in cases:
            if done and time.perf_counter() - start > budget_s:
                break  # (the leading process's own case is always measured)
            if case.num_tokens > max_tokens or read(case, implementation, mode) is not None:
                continue  # past the grid: each such process skips on its own, without the GPU
            write(case, implementation, mode, {"status": "failed", "reason": f"the batch process {os.getpid()} "
                                               "ended while measuring this case (a crash, a kill or a timeout)"})
            begun = time.perf_counter()
            result = runner.run_case(case, implementation, mode, samples, bw)
            record = record_of(result, bw.ideal_s(case) if result.status == "ok" else None)
            record["log"].update(defects.annotate_case(case, implementation, result.status, record["reason"]))
            record["log"]["case_s"] = round(time.perf_counter() - begun, 4)
            write(case, implementation, mode, record)
            done += 1
            gc.collect()  # the case's tensors and graphs go back to torch's allocator for the next case (not to the
            # driver: emptying torch's cache after each case cost ~0.1 s a case, a third of a batch, on an H200)
            if device == "cuda" and result.status == "failed" and not _healthy():
                break
    finally:
        gc.unfreeze()
    return done


def group(bench, params) -> list:
    """The (case, implementation) pairs of `bench`'s class, `params`' own first, then in asv's order; combinations
    whose case cannot even be described are left out (their processes skip on their own)."""
    at = bench.param_names.index("implementation")
    combos = [tuple(params)] + [c for c in itertools.product(*bench.params) if c != tuple(params)]
    out = []
    for combo in combos:
        try:
            out.append((bench.case(*combo), combo[at]))
        except Exception:
            continue
    return out
