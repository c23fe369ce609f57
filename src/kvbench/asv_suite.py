"""What the asv benchmark classes call: machine-sized grids, once-per-combination setup, and per-call timers.

asv runs every (benchmark, parameters) in a fresh process and, with a `setup`, calls setup again before every
sample; `setup_case` therefore prepares (checks, allocates, verifies) once per process and returns the cached
result after. Nothing here touches CUDA at import time (the device is found through NVML), so asv's forkserver
can fork safely. Timing goes through `timer(mode)`, which reads the prepared case's sampler: each asv sample is
one sample of kvbench's sampler, so asv's statistics are those of per-call latency.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from kvbench import fidelity, guards, impls, isolation, machine, roofline
from kvbench.device import default_device
from kvbench.errors import CaseError, Unavailable
from kvbench.runner import Prepared, make_case, prepare

DEVICE = default_device()


def _env_list(name: str, default: list, kind=str) -> list:
    """A comma-separated override of a parameter list (used by tests and quick runs)."""
    value = os.environ.get(name)
    return [kind(v) for v in value.split(",")] if value else default


NUM_TOKENS = _env_list("KVBENCH_NUM_TOKENS", [2**i for i in range(1, 17)], int)
# The CPU grid is sized for a 2-core, 24 GB machine: 16384 slots and at most 1024 tokens (minutes, not hours).
NUM_BLOCKS = int(os.environ.get("KVBENCH_NUM_BLOCKS") or (16384 if DEVICE == "cuda" else 1024))
MAX_TOKENS = int(os.environ.get("KVBENCH_MAX_TOKENS") or (65536 if DEVICE == "cuda" else 1024))
PRIMARY_MODE = "cudagraph" if DEVICE == "cuda" else "no_graph"
EAGER = os.environ.get("KVBENCH_EAGER") == "1"  # add the host-bound eager benchmarks on CUDA machines
# With a state log: also time each process's graph independently (kvbench.fidelity) after its first sample, so that
# `kvbench asv-report --state-log` can set asv's figure against it (~0.3 s more per process; for checks only).
FIDELITY = os.environ.get("KVBENCH_FIDELITY") == "1"

_prepared: dict[tuple, Prepared | Exception] = {}
_current: Prepared | None = None
_state_read = False
_phases: dict[str, float] = {}  # seconds since this process started, at each step (recorded in the state log)


if DEVICE == "cuda":
    isolation.warm_triton()  # in the parent asv forks from, so that no benchmark process pays for it


def _process_age() -> float:
    """Seconds since this process was created (forked), from /proc; 0 where that is unavailable."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def setup_case(implementation: str, num_tokens: int, num_blocks: int, **fields) -> Prepared:
    """Prepare once per parameter combination; raise NotImplementedError (asv: skipped) with the reason."""
    global _current
    key = (implementation, num_tokens, num_blocks, tuple(sorted(fields.items())))
    if key not in _prepared:
        _prepared.clear()  # one combination per process; never hold two sets of caches
        _phases["setup_start_s"] = round(_process_age(), 3)
        _phases["setup_at"] = round(time.time(), 3)  # wall clock: consecutive entries give the cycle per process
        start = time.perf_counter()
        try:
            if num_tokens > MAX_TOKENS:
                raise Unavailable(f"{DEVICE} grid stops at {MAX_TOKENS} tokens (KVBENCH_MAX_TOKENS)")
            case = make_case(implementation, num_tokens=num_tokens, num_blocks=num_blocks, device=DEVICE, **fields)
            _prepared[key] = prepare(case, implementation)
        except (Unavailable, CaseError) as exc:
            _prepared[key] = NotImplementedError(str(exc))
        except Exception as exc:  # wrong output and crashes: asv records a failure, every sample alike
            _prepared[key] = exc
        _phases["prepare_s"] = round(time.perf_counter() - start, 3)
    found = _prepared[key]
    if isinstance(found, Exception):
        raise found
    _current = found
    return found


class timer:
    """asv timer for `mode`: total per-call seconds measured so far by the current case's sampler."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self) -> float:
        return _current.sampler(self.mode).elapsed() if _current else 0.0


def check_state(benchmark: str) -> None:
    """Once per process, after the first sample (asv tears down between samples): read the GPU state, warn on
    stderr when the numbers are not trustworthy, and append it to KVBENCH_STATE_LOG (JSON lines) when set."""
    global _state_read
    if _state_read or _current is None or DEVICE != "cuda":
        return
    _state_read = True
    state = guards.gpu_state()
    for warning in guards.warnings(state):
        print(f"WARNING: {benchmark}: not trustworthy: {warning}", file=sys.stderr, flush=True)
    log = os.environ.get("KVBENCH_STATE_LOG")
    if log and state is not None:
        c = _current.case
        entry = {"benchmark": benchmark, "implementation": _current.impl.name, "case": c.label(),
                 "num_tokens": c.num_tokens, "dtype": c.dtype, "kv_cache_dtype": c.kv_cache_dtype,
                 **state, **_phases, "steps_s": _current.steps(), "calls_per_sample": _current.calls_per_sample(),
                 "first_sample_done_s": round(_process_age(), 3)}
        graph = _current.existing_sampler("cudagraph")
        if FIDELITY and graph is not None:  # the same graph, timed independently in this very process
            entry["independent_us"] = fidelity.independent_per_call_s(graph.graph, graph.calls_per_sample) * 1e6
        try:
            with open(log, "a") as f:
                f.write(json.dumps(entry) + "\n")
        except OSError as exc:  # a log that cannot be written must not fail the benchmark
            print(f"WARNING: KVBENCH_STATE_LOG not written: {exc}", file=sys.stderr, flush=True)


def sample(mode: str) -> None:
    _current.sampler(mode).sample()


def x_ideal(samples: int = 10) -> float:
    """The current case's median per-call time in the primary mode over the ideal time at the copy bandwidth."""
    bw = roofline.copy_bandwidth(DEVICE, machine.device_key(machine.info(DEVICE)))
    return statistics.median(_current.sampler(PRIMARY_MODE).measure(samples)) / bw.ideal_s(_current.case)


def _installed_here() -> list[str]:
    """Implementations for this device whose packages are installed (found without importing them: importing
    vLLM could touch CUDA before asv forks). The others would only be skipped, at a process each."""
    return [name for name, impl in impls.REGISTRY.items() if DEVICE in impl.devices and impl.installed()]


IMPLEMENTATIONS = _env_list("KVBENCH_IMPLEMENTATIONS", _installed_here())
DTYPES = _env_list("KVBENCH_DTYPES", ["half", "bfloat16", "float"])
