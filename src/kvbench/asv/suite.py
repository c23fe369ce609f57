"""What kvbench's asv benchmark classes (benchmarks/benchmarks.py) share: the grids for this machine, a case
prepared once per process, the per-call timer, and the checks after the first sample.

asv runs every (benchmark, parameters) in a fresh process forked from one that imported the suite (forkserver;
nothing here touches CUDA at import time) and calls `setup` before every sample, so a case is prepared (checked,
allocated, verified) on the first call and reused after. asv's timer is `PerCallTimer`: asv reads it before and
after each timed body, and the body takes one sample of kvbench's sampler, so each asv sample is one per-call time
(kvbench.measure.timing). After the first sample the timed path itself is verified (kvbench.runner) and the GPU
state read: a wrong write fails the benchmark, an untrustworthy GPU state prints a WARNING.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import sys
import tempfile
import time

from kvbench import config, files, impls, runner
from kvbench.errors import CaseError, Unavailable
from kvbench.measure import bandwidth, fidelity, gpu_state, isolation, machine
from kvbench.measure.device import default_device
from kvbench.ops.base import DTYPES as INPUT_DTYPES

DEVICE = default_device()
NUM_BLOCKS = config.positive_int("KVBENCH_NUM_BLOCKS", config.NUM_BLOCKS[DEVICE])
MAX_TOKENS = config.positive_int("KVBENCH_MAX_TOKENS", config.MAX_TOKENS[DEVICE])
NUM_TOKENS = config.items("KVBENCH_NUM_TOKENS", list(config.DEFAULT_TOKENS), int)
DTYPES = config.items("KVBENCH_DTYPES", list(INPUT_DTYPES), allowed=tuple(INPUT_DTYPES))
PRIMARY_MODE = "cudagraph" if DEVICE == "cuda" else "no_graph"
EAGER = config.flag("KVBENCH_EAGER")  # add the host-bound eager benchmarks on CUDA machines
# With a state log: also time each process's graph independently (kvbench.measure.fidelity) after its first sample,
# so that `kvbench asv-report --state-log` can set asv's figure against it (~0.3 s more per process; checks only).
FIDELITY = config.flag("KVBENCH_FIDELITY")


def _installed_here(op: str) -> list[str]:
    """`op`'s implementations for this device whose packages are installed (found without importing them:
    importing vLLM could touch CUDA before asv forks). The others would only be skipped, at a process each."""
    return [name for name, impl in impls.of(op).items() if DEVICE in impl.devices and impl.installed()]


_ASKED = config.items("KVBENCH_IMPLEMENTATIONS", [], allowed=impls.all_names())


NONE_SELECTED = "none-selected"  # asv needs a parameter value: its combinations are skipped with the reason


def implementations(op: str = "kv") -> list[str]:
    """The grid's implementations of `op`: those installed here, narrowed by KVBENCH_IMPLEMENTATIONS."""
    here = _installed_here(op)
    chosen = [name for name in _ASKED if name in impls.of(op)] if _ASKED else here
    return chosen or [NONE_SELECTED]


IMPLEMENTATIONS = implementations("kv")

if DEVICE == "cuda":
    isolation.warm_triton()  # in the parent asv forks from, so that no benchmark process pays for it


def layout_of(implementation: str) -> str:
    """The layout a kv implementation writes by default."""
    return impls.get(implementation, "kv").default_layout


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


class _Process:
    """This benchmark process's one case: prepared once (or the exception that stopped it), checked once."""

    key: tuple | None = None
    mode = PRIMARY_MODE
    prepared: runner.Prepared | Exception | None = None
    checked = False
    steps: dict = {}
    shared: dict | None = None  # samples of this case taken by another benchmark of this run (reuse_samples)
    ideal_s: float | None = None


def _ideal_s(case) -> float:
    """The process's case's ideal time, found once (machine facts, NVML and the bandwidth cache are not read again
    after every sample of a benchmark that shares its samples)."""
    if _Process.ideal_s is None:
        bw = bandwidth.copy_bandwidth(DEVICE, machine.device_key(machine.info(DEVICE)))
        _Process.ideal_s = bw.ideal_s(case)
    return _Process.ideal_s


def _log(entry: dict) -> None:
    """Append one JSON line to KVBENCH_STATE_LOG when set; a log that cannot be written never fails a benchmark."""
    path = config.text("KVBENCH_STATE_LOG")
    if not path:
        return
    try:
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")
    except OSError as exc:
        print(f"WARNING: KVBENCH_STATE_LOG not written: {exc}", file=sys.stderr, flush=True)


class _Shared:
    """Per-call samples shared between the benchmark processes of one `asv run`: they are all forked from one
    parent, so a folder named after that parent (pid and start time) is theirs alone. A benchmark that tracks
    "x ideal" of a case another benchmark has just timed reads that one's samples instead of timing the case
    again in a process of its own (no CUDA context, no verification: ~0.05 s instead of ~0.9 s)."""

    @staticmethod
    def folder() -> str:
        parent = os.getppid()
        try:
            with open(f"/proc/{parent}/stat") as f:
                started = f.read().rsplit(")", 1)[1].split()[19]
        except (OSError, IndexError):
            started = "0"
        return os.path.join(tempfile.gettempdir(), f"kvbench-asv-run-{parent}-{started}")

    @staticmethod
    def path(case, implementation: str, mode: str) -> str:
        key = hashlib.sha1(f"{case.label()}|{implementation}|{mode}".encode()).hexdigest()[:20]
        return os.path.join(_Shared.folder(), f"{key}.json")

    @staticmethod
    def write(path: str, samples: list[float], ideal_s: float) -> None:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with files.atomic(path) as f:
                json.dump({"samples": samples, "ideal_s": ideal_s}, f)
        except OSError:
            pass  # the x-ideal benchmark then times the case itself

    @staticmethod
    def read(path: str) -> dict | None:
        try:
            with open(path) as f:
                found = json.load(f)
            return found if found.get("samples") and found.get("ideal_s") else None
        except (OSError, ValueError):
            return None


class PerCallTimer:
    """asv's clock for kvbench benchmarks: the per-call seconds measured so far by this process's sampler."""

    def __call__(self) -> float:
        p = _Process.prepared
        return p.sampler(_Process.mode).elapsed() if isinstance(p, runner.Prepared) else 0.0


class Benchmark:
    """Base of kvbench's benchmark classes: sampling settings, `setup` (which builds the subclass's `case(*params)`
    and prepares it once per process), `sample()` for the timed bodies, and the checks after the first sample."""

    number = 1
    repeat = (10, 20, 10.0)
    rounds = 1
    warmup_time = 0.0
    timeout = 600
    timer = PerCallTimer()
    mode = PRIMARY_MODE  # the sampler's mode (kvbench.measure.timing.MODES)
    share_samples = False  # leave this case's samples for later benchmarks of the same run
    reuse_samples = False  # use the samples an earlier benchmark of the run took of the same case, if any

    def case(self, *params):
        """The case a parameter combination describes (each benchmark class builds its own)."""
        raise NotImplementedError

    def setup(self, *params):
        named = dict(zip(self.param_names, params))
        key = (type(self).__name__, params)
        if _Process.key != key:
            _Process.key, _Process.prepared, _Process.checked = key, None, False  # never two sets of caches
            _Process.mode, _Process.shared, _Process.ideal_s = self.mode, None, None
            if self.reuse_samples:
                _Process.shared = self._shared_samples(named["implementation"], params)
                if _Process.shared is not None:
                    return
            _Process.prepared = self._prepare(named["implementation"], params)
            if isinstance(_Process.prepared, Exception):
                status = "skipped" if isinstance(_Process.prepared, NotImplementedError) else "failed"
                self._record(status, named, str(_Process.prepared))
        if isinstance(_Process.prepared, Exception):
            raise _Process.prepared

    def _prepare(self, implementation: str, params) -> runner.Prepared | Exception:
        _Process.steps = {"setup_start_s": round(_process_age(), 3), "setup_at": round(time.time(), 3)}
        start = time.perf_counter()
        try:
            case = self.case(*params)
            if case.num_tokens > MAX_TOKENS:
                raise Unavailable(f"the {DEVICE} grid stops at {MAX_TOKENS} tokens (KVBENCH_MAX_TOKENS)")
            return runner.prepare(case, implementation)
        except (Unavailable, CaseError) as exc:  # asv: skipped, with the reason
            return NotImplementedError(str(exc))
        except Exception as exc:  # wrong output and crashes: asv records a failure
            return exc
        finally:
            _Process.steps["prepare_s"] = round(time.perf_counter() - start, 3)

    def _shared_samples(self, implementation: str, params) -> dict | None:
        try:
            return _Shared.read(_Shared.path(self.case(*params), implementation, self.mode))
        except Exception:  # an invalid case: prepared (and skipped) as usual
            return None

    def sample(self) -> None:
        _Process.prepared.sampler(self.mode).sample()

    def x_ideal(self, samples: int = 10) -> float:
        """The case's median per-call time in the primary mode over its ideal time at the copy bandwidth (from the
        samples an earlier benchmark of this run took of the same case, where there are some)."""
        if _Process.shared is not None:
            return statistics.median(_Process.shared["samples"]) / _Process.shared["ideal_s"]
        p = _Process.prepared
        return statistics.median(p.sampler(self.mode).measure(samples)) / _ideal_s(p.case)

    def teardown(self, *params):
        """After the first sample (asv tears down between samples): verify the timed path, read the GPU state;
        after every sample of a `share_samples` benchmark, leave the samples so far for later benchmarks."""
        p = _Process.prepared
        if not isinstance(p, runner.Prepared) or self.mode not in p.calls_per_sample():
            return
        if self.share_samples and _Process.checked:
            _Shared.write(_Shared.path(p.case, p.impl.name, self.mode), p.sampler(self.mode).samples,
                          _ideal_s(p.case))
        if _Process.checked:
            return
        _Process.checked = True
        named = dict(zip(self.param_names, params))
        try:
            p.check_timed(self.mode)
        except Exception as exc:
            self._record("failed", named, str(exc))
            raise
        state = gpu_state.gpu_state() if DEVICE == "cuda" else None
        for warning in gpu_state.warnings(state):
            print(f"WARNING: {type(self).__name__}: not trustworthy: {warning}", file=sys.stderr, flush=True)
        self._record("ok", named, None, state)

    def _record(self, status: str, named: dict, reason: str | None, state: dict | None = None) -> None:
        """One line in the state log: what this process measured, skipped or failed, and why."""
        entry = {"benchmark": type(self).__name__, "params": {k: str(v) for k, v in named.items()},
                 "status": status, "reason": reason}
        p = _Process.prepared
        if isinstance(p, runner.Prepared):
            c = p.case
            entry.update(implementation=p.impl.name, case=c.label(), num_tokens=c.num_tokens, dtype=c.dtype,
                         kv_cache_dtype=c.kv_cache_dtype, **(state or {}), **_Process.steps, steps_s=p.steps(),
                         calls_per_sample=p.calls_per_sample(), first_sample_done_s=round(_process_age(), 3))
            graph = p.existing_sampler("cudagraph")
            if FIDELITY and graph is not None and status == "ok":  # the same graph, timed independently here
                entry["independent_us"] = fidelity.independent_per_call_s(graph.graph, graph.calls_per_sample) * 1e6
        _log(entry)
