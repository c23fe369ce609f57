"""Prepare (check, allocate, verify) and measure cases; shared by the CLI and the asv suite."""

from __future__ import annotations

import dataclasses
import random
import statistics

from kvbench import guards, impls, layouts, roofline, timing
from kvbench.case import Case
from kvbench.device import check_fits, ensure_context
from kvbench.errors import CaseError, Unavailable, VerificationError
from kvbench.impls.base import Implementation, Writer
from kvbench.verify import Verified, verify
from kvbench.workload import Workload, make, rotation, rotation_size


def make_case(implementation: str, layout: str | None = None, **fields) -> Case:
    """A Case for `implementation`, in its default layout unless `layout` is given."""
    return Case(layout=layout or impls.get(implementation).default_layout, **fields)


def bytes_needed(case: Case, sets: int = 1) -> int:
    """Caches, inputs (`sets` of them for a cold-L2 rotation), and the verifier's temporaries."""
    inputs = 2 * case.num_tokens * case.num_heads * case.head_size * case.input_element_size
    return layouts.cache_bytes(case) + (sets + 3) * inputs


def l2_bytes(device: str) -> int:
    """The last-level cache a cold case must defeat: the GPU's L2; on CPU a nominal 32 MiB."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
    return 32 << 20


@dataclasses.dataclass
class Prepared:
    """A verified implementation bound to its workload, ready to be timed in any mode.

    `write` performs one call; for a cold-L2 case each call moves on to the next input set of the rotation
    (`rotation` sets), so a CUDA graph of K >= rotation calls touches every set once per replay.
    """

    impl: Implementation
    workload: Workload
    write: Writer
    verified: Verified
    input_seed: int
    rotation: int = 1
    phases: timing.Phases = dataclasses.field(default_factory=timing.Phases)
    _samplers: dict = dataclasses.field(default_factory=dict)

    @property
    def case(self) -> Case:
        return self.workload.case

    def sampler(self, mode: str) -> timing.Sampler:
        if mode not in self._samplers:
            self._samplers[mode] = timing.sampler(mode, self.write, self.case.device, min_calls=self.rotation)
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


def prepare(case: Case, implementation: str, input_seed: int | None = None) -> Prepared:
    """Check that `implementation` can run `case` here, allocate, and verify it on fresh random inputs.

    Raises Unavailable, CaseError (does not fit in memory) or VerificationError.
    """
    phases = timing.Phases()
    impl = impls.get(implementation)
    impl.check(case)
    with phases.step("context"):
        ensure_context(case.device)
    sets = rotation_size(case, roofline.bytes_moved(case), l2_bytes(case.device))
    check_fits(case, bytes_needed(case, sets))
    seed = random.randrange(2**31) if input_seed is None else input_seed
    with phases.step("allocate"):
        w = make(case, seed=seed)
        write = impl.bind(w)
    with phases.step("verify"):
        try:
            verified = verify(impl, w, write)
        except VerificationError as exc:
            raise VerificationError(f"{exc} [{case.label()}; input seed {seed}]") from None
    if sets > 1:
        with phases.step("rotation"):
            write = _round_robin([write] + [impl.bind(other) for other in rotation(w, sets)[1:]])
    return Prepared(impl, w, write, verified, seed, sets, phases)


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
    verified: str | None = None
    message: str | None = None
    gpu_state: dict | None = None  # read right after the samples (kvbench.guards)
    warnings: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def measure(p: Prepared, mode: str, samples: int, bandwidth: roofline.CopyBandwidth | None) -> Result:
    """Median per-call latency over `samples` samples, with bytes, GB/s and x ideal."""
    sampler = p.sampler(mode)
    per_call = sampler.measure(samples)
    state = guards.gpu_state() if p.case.device == "cuda" else None
    median_s = statistics.median(per_call)
    moved = roofline.bytes_moved(p.case)
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
        x_ideal=median_s / bandwidth.ideal_s(p.case) if bandwidth else None,
        verified=p.verified.method,
        gpu_state=state,
        warnings=guards.warnings(state),
    )


def run_case(
    case: Case, implementation: str, mode: str, samples: int, bandwidth: roofline.CopyBandwidth | None
) -> Result:
    """prepare + measure, turning every failure into a Result so that a sweep never loses what it measured."""
    try:
        return measure(prepare(case, implementation), mode, samples, bandwidth)
    except (Unavailable, CaseError) as exc:
        status, message = "skipped", str(exc)
    except VerificationError as exc:
        status, message = "failed", str(exc)
    except Exception as exc:  # a crash in one case must not lose the others
        status, message = "failed", f"{implementation}: {type(exc).__name__}: {exc}".splitlines()[0]
    return Result(implementation, mode, case.num_tokens, status, dataclasses.asdict(case), message=message)
