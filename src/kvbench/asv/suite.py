"""What kvbench's asv benchmark classes (benchmarks/benchmarks.py) share: the grids for this machine, a case
prepared once per process (or measured by a batch, kvbench.asv.batch), the per-call timer, and the checks after
the first sample.

asv runs every (benchmark, parameters) in a fresh process forked from one that imported the suite (forkserver;
nothing here touches CUDA at import time) and calls `setup` before every sample. On a GPU the first process of a
class measures the class's cases in a batch and files them in the run's store, and each process hands asv its case's
stored samples; otherwise (CPU, KVBENCH_BATCH=0) a process prepares its case (checked, allocated, verified) on the
first call, reuses it after, and files its samples for other benchmarks of the case. asv's timer is `PerCallTimer`:
asv reads it before and after each timed body, and the body takes one sample of kvbench's sampler, so each asv
sample is one per-call time (kvbench.measure.timing). In a process preparing its own case, after the first sample
the timed path itself is verified (kvbench.runner; a batch checks it before the samples and its rows after them)
and the GPU state read: a wrong write fails the benchmark, an untrustworthy GPU state prints a WARNING.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from kvbench import config, defects, impls, runner
from kvbench.asv import batch
from kvbench.errors import CaseError, Unavailable
from kvbench.measure import bandwidth, fidelity, gpu_state, isolation, machine
from kvbench.measure.device import default_device
from kvbench.ops import models

DEVICE = default_device()
NUM_BLOCKS = config.positive_int("KVBENCH_NUM_BLOCKS", config.NUM_BLOCKS[DEVICE])
MAX_TOKENS = config.positive_int("KVBENCH_MAX_TOKENS", config.MAX_TOKENS[DEVICE])
NUM_TOKENS = config.num_tokens()
DTYPES = config.input_dtypes()
PRIMARY_MODE = "cudagraph" if DEVICE == "cuda" else "no_graph"
EAGER = config.flag("KVBENCH_EAGER")  # add the host-bound eager benchmarks on CUDA machines
# With a state log: also time each process's graph independently (kvbench.measure.fidelity) after its first sample,
# so that `kvbench asv-report --state-log` can set asv's figure against it (~0.3 s more per process; checks only).
FIDELITY = config.flag("KVBENCH_FIDELITY")  # (one case per process then: no batches)
SAMPLES = 20  # asv's samples per benchmark (Benchmark.repeat's most), and what a batch takes of each case
batch.enabled(DEVICE)  # read again in each process; checked here so that a bad KVBENCH_BATCH fails at import
TIMEOUT_S = 600  # asv's limit for one benchmark process (Benchmark.timeout)
BATCH_BUDGET_S = TIMEOUT_S / 2  # a batch starts no case after this: the rest is led by a later process


def _installed_here(op: str) -> list[str]:
    """`op`'s implementations for this device whose packages are installed (found without importing them:
    importing vLLM could touch CUDA before asv forks). The others would only be skipped, at a process each."""
    return [name for name, impl in impls.of(op).items() if DEVICE in impl.devices and impl.installed()]


_ASKED = config.implementations()


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


SERVED_SLOTS = NUM_BLOCKS * 16  # the served caches hold as many slots as KVCacheWrite's, whatever the block size


def served_implementations() -> list[str]:
    """The kv implementations of the served classes: on CUDA those that write vLLM's served layouts (kvbench's
    Triton kernel and vLLM's two flash writers; the torch reference, already timed in every layout elsewhere, is
    left out to keep the suite's time); on a CPU the reference and vLLM's CPU op (its CPU backend's layout)."""
    wanted = ("triton", "vllm-flash", "vllm-triton") if DEVICE == "cuda" else ("torch", "vllm-cpu")
    return [name for name in implementations("kv") if name in wanted] or [NONE_SELECTED]


def served_case(model: str, implementation: str, op: str | None = None, **fields):
    """A model preset's cache write on one GPU (`model` is a preset name, with `:tpN` for tensor parallelism) as
    the installed vLLM serves it (kvbench.ops.served: its backend's layout and block size)."""
    name, _, tp = model.partition(":tp")
    model_preset = models.get(name)
    op, shapes = model_preset.fields(int(tp or 1), op)
    return runner.served_case(implementation, op, SERVED_SLOTS, sparse=model_preset.sparse,
                              **{"device": DEVICE, **shapes, **fields})


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
    """This benchmark process's one case: prepared here once (or the exception that stopped it) and checked once,
    or found in the run's store (kvbench.asv.batch), measured by another process of the run."""

    key: tuple | None = None
    mode = PRIMARY_MODE
    prepared: runner.Prepared | Exception | None = None
    checked = False
    steps: dict = {}
    stored: dict | None = None  # the case's outcome from the run's store
    replay: StoredSamples | None = None  # its samples, handed to asv one per timed body
    ideal_s: float | None = None


def _ideal_s(case) -> float:
    """The process's case's ideal time, found once (machine facts, NVML and the bandwidth cache are not read again
    after every sample)."""
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


class StoredSamples:
    """Per-call samples another process of this run took of the case, handed to asv in order (again from the
    first if asv asks for more than were taken)."""

    def __init__(self, samples: list[float]):
        self._stored = samples
        self.samples: list[float] = []
        self._total = 0.0

    def sample(self) -> None:
        self.samples.append(self._stored[len(self.samples) % len(self._stored)])
        self._total += self.samples[-1]

    def elapsed(self) -> float:
        return self._total


def _timed_sampler(mode: str):
    """What the timed bodies sample: the stored samples, or this process's own sampler of its prepared case."""
    if _Process.replay is not None:
        return _Process.replay
    p = _Process.prepared
    return p.sampler(mode) if isinstance(p, runner.Prepared) else None


class PerCallTimer:
    """asv's clock for kvbench benchmarks: the per-call seconds measured so far by this process's sampler."""

    def __call__(self) -> float:
        sampler = _timed_sampler(_Process.mode)
        return sampler.elapsed() if sampler is not None else 0.0


class Benchmark:
    """Base of kvbench's benchmark classes: sampling settings, `setup` (which builds the subclass's `case(*params)`
    and prepares it once per process, or finds it measured in the run's store), `sample()` for the timed bodies,
    and the checks after the first sample."""

    number = 1
    repeat = (10, SAMPLES, 10.0)
    rounds = 1
    warmup_time = 0.0
    timeout = TIMEOUT_S
    timer = PerCallTimer()
    mode = PRIMARY_MODE  # the sampler's mode (kvbench.measure.timing.MODES)

    def case(self, *params):
        """The case a parameter combination describes (each benchmark class builds its own)."""
        raise NotImplementedError

    def setup(self, *params):
        named = dict(zip(self.param_names, params))
        key = (type(self).__name__, params)
        if _Process.key != key:
            _Process.key, _Process.prepared, _Process.checked = key, None, False  # never two sets of caches
            _Process.mode, _Process.stored, _Process.replay, _Process.ideal_s = self.mode, None, None, None
            _Process.steps = {}
            _Process.stored = self._stored(named["implementation"], params)
            if _Process.stored is not None:
                self._use_stored(named)
            else:
                _Process.prepared = self._prepare(named["implementation"], params)
                if isinstance(_Process.prepared, Exception):
                    status = "skipped" if isinstance(_Process.prepared, NotImplementedError) else "failed"
                    self._record(status, named, str(_Process.prepared))
        if isinstance(_Process.prepared, Exception):
            raise _Process.prepared

    def _stored(self, implementation: str, params) -> dict | None:
        """The case's outcome in this run's store; on a GPU, when it is not there, this process first measures its
        class's cases (kvbench.asv.batch). None: this process prepares the case itself."""
        try:
            case = self.case(*params)
        except Exception:  # an invalid case: prepared (and skipped) as usual
            return None
        found = batch.read(case, implementation, self.mode)
        if found is None and batch.enabled(DEVICE) and not FIDELITY and case.num_tokens <= MAX_TOKENS:
            _Process.steps = {"setup_start_s": round(_process_age(), 3), "setup_at": round(time.time(), 3)}
            start = time.perf_counter()
            try:
                measured = batch.lead(batch.group(self, params), self.mode, SAMPLES, DEVICE, MAX_TOKENS,
                                      BATCH_BUDGET_S)
            except Exception as exc:  # the batch's own set-up: this process measures its case alone instead
                print(f"WARNING: {type(self).__name__}: batch stopped: {exc}", file=sys.stderr, flush=True)
                measured = 0
            _Process.steps.update(batch_cases=measured, batch_s=round(time.perf_counter() - start, 3))
            found = batch.read(case, implementation, self.mode)
        return found

    def _use_stored(self, named: dict) -> None:
        found = _Process.stored
        for warning in found.get("warnings") or []:
            print(f"WARNING: {type(self).__name__}: not trustworthy: {warning}", file=sys.stderr, flush=True)
        self._record(found["status"], named, found.get("reason"), {**found.get("log", {}),
                                                                  "batch_pid": found.get("batch_pid")})
        if found["status"] == "ok":
            _Process.replay = StoredSamples(found["samples"])
        elif found["status"] == "skipped":
            _Process.prepared = NotImplementedError(found.get("reason"))
        else:
            _Process.prepared = RuntimeError(found.get("reason"))

    def _prepare(self, implementation: str, params) -> runner.Prepared | Exception:
        _Process.steps = {"setup_start_s": round(_process_age(), 3), "setup_at": round(time.time(), 3)}
        start = time.perf_counter()
        try:
            case = self.case(*params)
            if case.num_tokens > MAX_TOKENS:
                raise Unavailable(f"the {DEVICE} grid stops at {MAX_TOKENS} tokens (KVBENCH_MAX_TOKENS)")
            return runner.prepare(case, implementation, mode=self.mode)
        except (Unavailable, CaseError) as exc:  # asv: skipped, with the reason in asv's words
            return NotImplementedError(config.for_asv(str(exc)))
        except Exception as exc:  # wrong output and crashes: asv records a failure
            return exc
        finally:
            _Process.steps["prepare_s"] = round(time.perf_counter() - start, 3)

    def sample(self) -> None:
        _timed_sampler(self.mode).sample()

    def x_ideal(self, samples: int = 10) -> float:
        """The case's median per-call time in the primary mode over its ideal time at the copy bandwidth (from the
        samples the run's store holds, where it has them)."""
        if _Process.stored is not None:
            return statistics.median(_Process.stored["samples"]) / _Process.stored["ideal_s"]
        p = _Process.prepared
        return statistics.median(p.sampler(self.mode).measure(samples)) / _ideal_s(p.case)

    def teardown(self, *params):
        """After the first sample (asv tears down between samples): verify the timed path, read the GPU state;
        after every later sample, leave the samples so far in the run's store for other benchmarks of the case."""
        p = _Process.prepared
        if not isinstance(p, runner.Prepared) or self.mode not in p.calls_per_sample():
            return
        if _Process.checked:
            batch.write(p.case, p.impl.name, self.mode, {"status": "ok", "reason": None,
                                                          "samples": p.sampler(self.mode).samples,
                                                          "ideal_s": _ideal_s(p.case)})
            return
        _Process.checked = True
        named = dict(zip(self.param_names, params))
        try:
            p.check_timed(self.mode)
        except Exception as exc:
            self._record("failed", named, str(exc))
            batch.write(p.case, p.impl.name, self.mode, {"status": "failed", "reason": str(exc)})
            raise
        state = gpu_state.gpu_state() if DEVICE == "cuda" else None
        for warning in gpu_state.warnings(state):
            print(f"WARNING: {type(self).__name__}: not trustworthy: {warning}", file=sys.stderr, flush=True)
        self._record("ok", named, None, state)

    def _record(self, status: str, named: dict, reason: str | None, state: dict | None = None) -> None:
        """One line in the state log: what this process measured, skipped or failed, and why (for a case from
        the store: what the process that measured it recorded, and its pid)."""
        entry = {"benchmark": type(self).__name__, "params": {k: str(v) for k, v in named.items()},
                 "status": status, "reason": reason}
        p = _Process.prepared
        if status != "skipped":  # a known vLLM defect's failure, or a case of one that passes now (kvbench.defects)
            try:
                case = p.case if isinstance(p, runner.Prepared) else self.case(*named.values())
                entry.update(defects.annotate_case(case, named["implementation"], status, reason))
            except Exception:  # an invalid case is no defect's; the log line is written all the same
                pass
        if _Process.stored is not None:
            entry.update(**(state or {}), **_Process.steps)
            _log(entry)
            return
        if isinstance(p, runner.Prepared):
            c = p.case
            entry.update(implementation=p.impl.name, case=c.label(), num_tokens=c.num_tokens, dtype=c.dtype,
                         kv_cache_dtype=c.kv_cache_dtype, **(state or {}), **_Process.steps, steps_s=p.steps(),
                         calls_per_sample=p.calls_per_sample(), first_sample_done_s=round(_process_age(), 3))
            graph = p.existing_sampler("cudagraph")
            if FIDELITY and graph is not None and status == "ok":  # the same graph, timed independently here
                entry["independent_us"] = fidelity.independent_per_call_s(graph.graph, graph.calls_per_sample) * 1e6
        _log(entry)
