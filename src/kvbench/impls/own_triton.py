"""`triton`: kvbench's own Triton kernels (kvbench.impls.kernels), flash NHD/HND and paged layouts.

They run on CUDA devices, and on CPU tensors only under Triton's interpreter (TRITON_INTERPRET=1, for tests).
"""

from __future__ import annotations

import os

from kvbench.impls.base import Implementation, Writer
from kvbench.ops.kv import KVWorkload


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
            import kvbench.impls.kernels.cache_write  # noqa: F401
        except ImportError as exc:
            raise ImportError(f"triton not installed ({exc})") from exc

    def bind(self, w: KVWorkload) -> Writer:
        from kvbench.impls.kernels.cache_write import reshape_and_cache

        args = (w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, w.case.fp8_format, w.k_scale,
                w.v_scale, w.case.layout)
        return lambda: reshape_and_cache(*args)
