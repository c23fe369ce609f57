"""Prepare (check, allocate, verify) and measure cases; shared by the CLI and the asv suite."""

from __future__ import annotations

import dataclasses
import random
import statistics

from kvbench import impls, layouts, roofline, timing
from kvbench.case import Case
from kvbench.device import check_fits
from kvbench.errors import CaseError, Unavailable, VerificationError
from kvbench.impls.base import Implementation, Writer
from kvbench.verify import Verified, verify
from kvbench.workload import Workload, make


def make_case(implementation: str, layout: str | None = None, **fields) -> Case:
    """A Case for `implementation`, in its default layout unless `layout` is given."""
    return Case(layout=layout or impls.get(implementation).default_layout, **fields)


def bytes_needed(case: Case) -> int:
    """Caches, inputs, and the verifier's temporaries (a few copies of the inputs)."""
    inputs = 2 * case.num_tokens * case.num_heads * case.head_size * case.input_element_size
    return layouts.cache_bytes(case) + 4 * inputs


@dataclasses.dataclass
class Prepared:
    """A verified implementation bound to its workload, ready to be timed in any mode."""

    impl: Implementation
    workload: Workload
    write: Writer
    verified: Verified
    input_seed: int
    _samplers: dict = dataclasses.field(default_factory=dict)

    @property
    def case(self) -> Case:
        return self.workload.case

    def sampler(self, mode: str) -> timing.Sampler:
        if mode not in self._samplers:
            self._samplers[mode] = timing.sampler(mode, self.write, self.case.device)
        return self._samplers[mode]


def prepare(case: Case, implementation: str, input_seed: int | None = None) -> Prepared:
    """Check that `implementation` can run `case` here, allocate, and verify it on fresh random inputs.

    Raises Unavailable, CaseError (does not fit in memory) or VerificationError.
    """
    impl = impls.get(implementation)
    impl.check(case)
    check_fits(case, bytes_needed(case))
    seed = random.randrange(2**31) if input_seed is None else input_seed
    w = make(case, seed=seed)
    write = impl.bind(w)
    try:
        verified = verify(impl, w, write)
    except VerificationError as exc:
        raise VerificationError(f"{exc} [{case.label()}; input seed {seed}]") from None
    return Prepared(impl, w, write, verified, seed)


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

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def measure(p: Prepared, mode: str, samples: int, bandwidth: roofline.CopyBandwidth | None) -> Result:
    """Median per-call latency over `samples` samples, with bytes, GB/s and x ideal."""
    sampler = p.sampler(mode)
    per_call = sampler.measure(samples)
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
