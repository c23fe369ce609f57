"""`triton`: kvbench's own Triton kernel (kvbench.triton_kernels), flash NHD/HND and paged layouts.

It runs on CUDA devices, and on CPU tensors only under Triton's interpreter (TRITON_INTERPRET=1, for tests).
"""

from __future__ import annotations

import os

from kvbench.impls.base import Implementation, Writer
from kvbench.workload import Workload


class TritonWrite(Implementation):
    name = "triton"
    description = "kvbench's own Triton kernel (one program per token and group of heads)"
    layouts = ("nhd", "hnd", "paged")
    per_head_scales = True
    packages = ("triton",)

    @property
    def devices(self) -> tuple[str, ...]:
        return ("cuda", "cpu") if os.environ.get("TRITON_INTERPRET") == "1" else ("cuda",)

    def load(self) -> None:
        try:
            import kvbench.triton_kernels  # noqa: F401
        except ImportError as exc:
            raise ImportError(f"triton not installed ({exc})") from exc

    def bind(self, w: Workload) -> Writer:
        from kvbench.triton_kernels import reshape_and_cache

        args = (w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, w.case.fp8_format, w.k_scale,
                w.v_scale, w.case.layout)
        return lambda: reshape_and_cache(*args)
