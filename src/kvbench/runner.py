"""A case from description to number, the one path shared by the CLI and the asv suite.

`prepare` checks that the implementation can run the case here (before allocating anything), makes the tensors,
and verifies one call on fresh random inputs. `measure` takes the samples, then verifies the timed path itself
(the graph replay or eager sample that was timed, on poisoned outputs) and that the inputs are unchanged, and
only then returns a number. `run_case` (the CLI's sweeps, the asv suite's batches) does one whole check instead of
two: it prepares without the eager check, the timed path is verified whole as soon as its graph is made (before
the sampler's clock warm-up and samples), and after the samples one more replay is checked on its rows only (an op
whose reference only knows the first call keeps the eager check and the whole check after). It turns every way of
ending without a number into a skipped or failed row.
"""

from __future__ import annotations

import dataclasses
import random
import statistics

import torch

from kvbench import impls, ops
from kvbench.errors import CaseError, Unavailable, VerificationError
from kvbench.impls.base import Implementation, Writer
from kvbench.measure import bandwidth, gpu_state, timing
from kvbench.measure.device import check_fits, ensure_context
from kvbench.ops import served, slots
from kvbench.ops.base import WriteCase, Workload
from kvbench.ops.verify import Verified, fingerprints, verify

COLD_L2_FACTOR = 4  # cold: the input sets of one rotation touch at least 4x the L2
MAX_ROTATION = 2048


def make_case(implementation: str, layout: str | None = None, op: str = "kv", backend: str | None = None,
              sparse: bool = False, **fields) -> WriteCase:
    """A case of `op` for `implementation`, in its default layout unless `layout` is given. Layout "served" is what
    the installed vLLM's attention `backend` passes (kvbench.ops.served; `sparse`: a model with DeepSeek's sparse
    attention): its layout and block size (a block size given in `fields` wins)."""
    impl = impls.get(implementation, op)
    case_type = ops.get(op).Case
    if layout == "served":
        resolved, _ = served.resolve(op, implementation, fields.get("device", "cuda"), backend,
                                     kv_cache_dtype=fields.get("kv_cache_dtype"), sparse=sparse)
        layout = resolved.pop("layout", None)
        fields = {**resolved, **fields}
    if "layout" in {f.name for f in dataclasses.fields(case_type)}:
        fields["layout"] = layout or impl.default_layout
    return case_type(**fields)


def served_case(implementation: str, op: str, slots_per_cache: int, sparse: bool = False,
                layout_device: str | None = None, **fields) -> WriteCase:
    """A case of `op` in the layout and block size the installed vLLM serves it with (kvbench.ops.served, for
    `layout_device`'s backend, by default the case's device; `sparse` as in make_case), its cache holding
    `slots_per_cache` slots whatever the block size, or as many blocks as the case's slots need."""
    resolved, _ = served.resolve(op, implementation, layout_device or fields.get("device", "cuda"),
                                 kv_cache_dtype=fields.get("kv_cache_dtype"), sparse=sparse)
    layout = resolved.pop("layout", None)  # resolved once here: the layout and block size go to the case as they are
    block = resolved.get("block_size", 16)
    need = slots.blocks_needed(fields.get("slots", "random"), fields["num_tokens"], block)
    return make_case(implementation, layout, op, **{"num_blocks": max(slots_per_cache // block, need), **resolved,
                                                     **fields})


def l2_bytes(device: str) -> int:
    """The last-level cache a cold case must defeat: the GPU's L2; on CPU a nominal 32 MiB."""
    if device == "cuda":
        return torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
    return 32 << 20


def rotation_size(case: WriteCase) -> int:
    """How many input sets a cold-L2 case rotates through: enough that one rotation touches COLD_L2_FACTOR x L2,
    at most MAX_ROTATION and what fits in the cache as disjoint slot sets; Unavailable where that is not enough (a
    case so small that 2048 sets stay in the L2 would be timed warm)."""
    if case.l2 == "warm":
        return 1
    need = COLD_L2_FACTOR * l2_bytes(case.device)
    wanted = -(-need // case.bytes_moved)
    fits = slots.max_sets(case.slots, case.num_tokens, case.num_blocks, case.block_size)
    sets = max(1, min(MAX_ROTATION, wanted, fits))
    if sets * case.bytes_moved < need:  # the L2 would keep part of the rotation: a "cold" figure would be warm
        fit = f"{sets} disjoint set{'s' if sets > 1 else ''} fit{'' if sets > 1 else 's'} in the cache"
        limit = f"at most {MAX_ROTATION} sets" if sets == MAX_ROTATION else fit
        if wanted > MAX_ROTATION:  # even a larger cache would stop at MAX_ROTATION sets
            fix = "use more tokens or l2 warm"
        else:
            blocks = wanted * slots.blocks_needed(case.slots, case.num_tokens, case.block_size)
            fix = f"use --num-blocks {blocks} or more, or l2 warm"
        raise Unavailable(f"l2 cold: one rotation must touch {COLD_L2_FACTOR}x the L2 ({need / 2**20:.0f} MiB here), "
                          f"and {case.num_tokens} tokens a set ({limit}) touch {sets * case.bytes_moved / 2**20:.1f} "
                          f"MiB; {fix}")
    return sets


def bytes_needed(case: WriteCase, sets: int = 1) -> int:
    """Outputs, inputs (`sets` of them for a cold-L2 rotation), and the verifier's temporaries."""
    return case.cache_bytes + (sets + 3) * case.input_bytes


@dataclasses.dataclass
class Prepared:
    """A verified implementation bound to its workloads, ready to be timed in any mode.

    `write` performs one call; for a cold-L2 case each call moves on to the next workload of the rotation, so a
    sample (at least `rotation` calls) writes every one of them.
    """

    impl: Implementation
    workloads: list[Workload]
    write: Writer
    verified: Verified | None  # the eager check of `prepare`; None where it was left to the timed path
    input_seed: int
    inputs_before: list[torch.Tensor]
    phases: timing.Phases = dataclasses.field(default_factory=timing.Phases)
    _samplers: dict = dataclasses.field(default_factory=dict)

    @property
    def workload(self) -> Workload:
        return self.workloads[0]

    @property
    def case(self) -> WriteCase:
        return self.workload.case

    @property
    def rotation(self) -> int:
        return len(self.workloads)

    def sampler(self, mode: str, check: timing.Check | None = None) -> timing.Sampler:
        """The sampler for `mode`, made on first use; `check`, for one made now, is called with its run_once before
        its warm-up and samples (timing.sampler)."""
        check_graph(self.impl, mode)
        if mode not in self._samplers:
            self._samplers[mode] = timing.sampler(mode, self.write, self.case.device, min_calls=self.rotation,
                                                  check=check)
        return self._samplers[mode]

    def existing_sampler(self, mode: str) -> timing.Sampler | None:
        """The sampler for `mode` if one was made (None otherwise; making one would capture a graph)."""
        return self._samplers.get(mode)

    def calls_per_sample(self) -> dict[str, int]:
        """Calls per sample of each sampler made so far, by mode."""
        return {mode: s.calls_per_sample for mode, s in self._samplers.items()}

    def steps(self) -> dict[str, float]:
        """Seconds spent preparing and in each sampler's set-up, by step."""
        out = dict(self.phases)
        for s in self._samplers.values():
            out.update({f"{s.mode}_{name}": t for name, t in s.phases.items()})
        return out

    def check_timed(self, mode: str) -> Verified:
        """Verify the timed path: poisoned outputs, one untimed sample exactly as timed (the same graph replay or
        eager calls), every workload's output, and inputs unchanged since before the first call."""
        return self._verify_timed(mode, self.sampler(mode).run_once)

    def recheck_timed(self, mode: str) -> None:
        """After the samples of a timed path checked whole before them: one more untimed sample on poisoned rows,
        its rows right and the inputs unchanged (kvbench.ops.verify.verify, whole=False)."""
        self._verify_timed(mode, self.sampler(mode).run_once, whole=False)

    def _verify_timed(self, mode: str, run_once, whole: bool = True) -> Verified:
        step, where = ("verify_timed", "timed path") if whole else ("recheck_timed", "after the samples")
        with self.phases.step(step):
            try:
                return verify(self.impl.name, self.workloads, run_once, self.impl.compare, self.inputs_before,
                              whole=whole)
            except VerificationError as exc:
                raise VerificationError(f"{exc} [{where}, {mode}; {self.case.label()}; input seed "
                                        f"{self.input_seed}]") from None


def prepare(case: WriteCase, implementation: str, input_seed: int | None = None, mode: str | None = None,
            verify_now: bool = True) -> Prepared:
    """Check that `implementation` can run `case` here (and be timed in `mode`, where given), allocate, and verify it
    on fresh random inputs (`verify_now` False: left to `measure`, which verifies the timed path whole before its
    samples and its rows after them, except for an op whose reference only knows its first call:
    Workload.CHECK_FIRST_CALL, verified here all the same).

    Raises Unavailable, CaseError (does not fit in memory) or VerificationError.
    """
    phases = timing.Phases()
    impl = impls.get(implementation, case.OP)
    impl.check(case)
    if mode is not None:
        check_graph(impl, mode)
    with phases.step("context"):
        ensure_context(case.device)
    sets = rotation_size(case)
    check_fits(case, bytes_needed(case, sets))
    seed = random.randrange(2**31) if input_seed is None else input_seed
    with phases.step("allocate"):
        workloads = ops.workloads(case, seed, sets)
        writers = [impl.bind(w) for w in workloads]
        before = fingerprints(workloads)
    verified = None
    if verify_now or workloads[0].CHECK_FIRST_CALL:
        with phases.step("verify"):
            try:
                verified = verify(impl.name, workloads[:1], writers[0], impl.compare, before[:1])
            except VerificationError as exc:
                raise VerificationError(f"{exc} [{case.label()}; input seed {seed}]") from None
    write = writers[0] if sets == 1 else _round_robin(writers)
    return Prepared(impl, workloads, write, verified, seed, before, phases)


def _round_robin(writers: list[Writer]) -> Writer:
    """One writer that calls `writers` in turn (a cold-L2 rotation)."""
    turn = [0]

    def write():
        writers[turn[0]]()
        turn[0] = (turn[0] + 1) % len(writers)

    return write


@dataclasses.dataclass
class Result:
    """One row of a sweep: a measured case, or why it has no number."""

    implementation: str
    mode: str
    num_tokens: int
    status: str  # "ok", "skipped" (unavailable/invalid) or "failed" (wrong output or an error)
    case: dict
    latency_us: float | None = None
    samples_us: list[float] = dataclasses.field(default_factory=list)
    calls_per_sample: int | None = None
    bytes_moved: int | None = None
    gbps: float | None = None
    x_ideal: float | None = None
    x_sector_ideal: float | None = None  # time / (the sector model's bytes / copy bandwidth): kvbench.ops.sectors
    # (the CLI's sweep fills it in; the asv suite does not spend the model's seconds per case)
    verified: str | None = None
    message: str | None = None
    gpu_state: dict | None = None  # read right after the samples (kvbench.measure.gpu_state)
    steps: dict | None = None  # seconds of each step of preparing and sampling (Prepared.steps)
    warnings: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def measure(p: Prepared, mode: str, samples: int, bw: bandwidth.CopyBandwidth | None) -> Result:
    """Median per-call latency over `samples` samples, with bytes, GB/s and x ideal; the timed path verified: where
    `prepare` left its check out, before the samples (a sampler made here checks its graph before its warm-up) and
    re-checked after them on its rows only (no pass over the rest of the cache); else fully after them."""
    checked = []  # the whole check a sampler made here ran before its samples
    check = (lambda run_once: checked.append(p._verify_timed(mode, run_once))) if p.verified is None else None
    sampler = p.sampler(mode, check)
    per_call = sampler.measure(samples)
    state = gpu_state.gpu_state() if p.case.device == "cuda" else None
    if checked:
        verified = checked[0]
        p.recheck_timed(mode)
    else:
        verified = p.check_timed(mode)
    median_s = statistics.median(per_call)
    moved = p.case.bytes_moved
    return Result(
        implementation=p.impl.name,
        mode=mode,
        num_tokens=p.case.num_tokens,
        status="ok",
        case=dataclasses.asdict(p.case),
        latency_us=median_s * 1e6,
        samples_us=[s * 1e6 for s in per_call],
        calls_per_sample=sampler.calls_per_sample,
        bytes_moved=moved,
        gbps=moved / median_s / 1e9,
        x_ideal=median_s / bw.ideal_s(p.case) if bw else None,
        verified=verified.method,
        gpu_state=state,
        steps=p.steps(),
        warnings=gpu_state.warnings(state),
    )


def check_graph(impl: Implementation, mode: str) -> None:
    """Unavailable when `mode` is cudagraph and the implementation's calls cannot be captured in a CUDA graph."""
    if mode == "cudagraph" and impl.graph_reason:
        raise Unavailable(f"{impl.name}: {impl.graph_reason}; measure it with mode no_graph")


def run_case(case: WriteCase, implementation: str, mode: str, samples: int,
             bw: bandwidth.CopyBandwidth | None) -> Result:
    """prepare + measure, turning every failure into a Result so that a sweep never loses what it measured."""
    try:
        timing.check_mode(mode, case.device)  # before anything is allocated
        return measure(prepare(case, implementation, mode=mode, verify_now=False), mode, samples, bw)
    except (Unavailable, CaseError) as exc:
        status, message = "skipped", str(exc)
    except VerificationError as exc:
        status, message = "failed", str(exc)
    except torch.cuda.OutOfMemoryError as exc:  # what the estimate (check_fits) missed: a limit of this GPU
        torch.cuda.empty_cache()
        status, message = "skipped", f"{implementation}: does not fit in this GPU's memory ({str(exc).split('.')[0]})"
    except Exception as exc:  # a crash in one case must not lose the others
        status, message = "failed", f"{implementation}: {type(exc).__name__}: {exc}".splitlines()[0]
    return Result(implementation, mode, case.num_tokens, status, dataclasses.asdict(case), message=message)
