"""Cross-check of kvbench's cudagraph figure against an independent CUDA-event measurement of the same graph.

kvbench's figure (what the CLI and the asv timer report) is the median over samples of one replay each, with a GPU
sleep queued first. The independent figure replays the same graph R times back to back between two CUDA events,
divided by R x K, median of 15 such measurements: no per-sample host round trip, no sleep, nothing of kvbench's
sampler. Their ratio should be 1 within noise; the GPU test asserts within 3 %.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import TYPE_CHECKING

import torch

from kvbench.measure.timing import cuda_seconds

if TYPE_CHECKING:
    from kvbench.runner import Prepared


@dataclasses.dataclass
class Fidelity:
    implementation: str
    num_tokens: int
    calls_per_replay: int
    kvbench_us: float
    independent_us: float

    @property
    def ratio(self) -> float:
        return self.kvbench_us / self.independent_us


def independent_per_call_s(graph: torch.cuda.CUDAGraph, calls: int, replays: int = 20, repeats: int = 15) -> float:
    """Median over `repeats` of (time of `replays` back-to-back replays) / (replays x calls), by CUDA events."""
    def replay_all():
        for _ in range(replays):
            graph.replay()

    return statistics.median(cuda_seconds(replay_all) / (replays * calls) for _ in range(repeats))


def compare(p: Prepared, samples: int = 20) -> Fidelity:
    """kvbench's cudagraph median per call next to the independent measurement of the same graph."""
    sampler = p.sampler("cudagraph")
    ours = statistics.median(sampler.measure(samples))
    theirs = independent_per_call_s(sampler.graph, sampler.calls_per_sample)
    return Fidelity(p.impl.name, p.case.num_tokens, sampler.calls_per_sample, ours * 1e6, theirs * 1e6)
