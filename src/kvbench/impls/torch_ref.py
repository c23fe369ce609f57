"""`torch`: the reference KV-cache write in plain tensor ops, every layout, dtype and device.

It is also the baseline a user would write by hand (quantize, then one indexed copy per cache), and it can be
captured in a CUDA graph: padding tokens (negative slots) are skipped without a host sync by making them repeat the
first real token's write (same slot, same data), and a batch of padding only rewrites slot 0 with its own contents.
"""

from __future__ import annotations

import torch

from kvbench import fp8, layouts
from kvbench.case import LAYOUTS, Case
from kvbench.impls.base import Implementation, Writer
from kvbench.workload import Workload


def stored(x: torch.Tensor, scale: torch.Tensor, case: Case) -> torch.Tensor:
    """What the cache must hold for inputs x [tokens, heads, head_size]: x itself, or its fp8 codes."""
    return fp8.quantize(x, scale, case.fp8_format) if case.is_fp8 else x


def write(
    case: Case,
    key: torch.Tensor,
    value: torch.Tensor,
    key_cache: torch.Tensor,
    value_cache: torch.Tensor,
    slot_mapping: torch.Tensor,
    k_scale: torch.Tensor,
    v_scale: torch.Tensor,
) -> None:
    """Write key/value rows [: len(slot_mapping)] into the caches at their slots; negative slots are skipped."""
    n = slot_mapping.shape[0]
    valid = slot_mapping >= 0
    any_valid = valid.any()
    first = torch.argmax(valid.to(torch.int8))
    src = torch.where(valid, torch.arange(n, device=slot_mapping.device), first)
    slots = torch.where(any_valid, slot_mapping[src], 0)
    for which, x, scale, cache in (("key", key, k_scale, key_cache), ("value", value, v_scale, value_cache)):
        data = stored(x[:n][src], scale, case)
        current = layouts.gather(case.layout, which, cache, slots[:1])
        data = torch.where(any_valid, data, current)
        layouts.scatter(case.layout, which, cache, slots, data)


class TorchReference(Implementation):
    name = "torch"
    description = "reference in plain torch ops (quantize + indexed copy); the hand-written baseline"
    devices = ("cuda", "cpu")
    layouts = ("nhd",) + tuple(layout for layout in LAYOUTS if layout != "nhd")
    per_head_scales = True

    def bind(self, w: Workload) -> Writer:
        def run():
            write(w.case, w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, w.k_scale, w.v_scale)

        return run
