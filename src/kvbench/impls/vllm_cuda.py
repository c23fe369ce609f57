"""Adapters to vLLM's CUDA KV-cache write ops (`vllm._custom_ops`) and vLLM's Triton flash op.

Written against vLLM's documented signatures (all eight arguments, scales as float32 device tensors, vLLM >= Jan
2025): `op(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale, v_scale)`. Imports are guarded:
without a CUDA build of vLLM these implementations report why they are unavailable.
"""

from __future__ import annotations

import importlib

from kvbench.impls.base import Implementation, Writer
from kvbench.workload import Workload

TRITON_MODULES = (
    "vllm.v1.attention.ops.triton_reshape_and_cache_flash",  # since Jan 2026
    "vllm.attention.ops.triton_reshape_and_cache_flash",
)


def _vllm_ops():
    """vllm._custom_ops, or raise ImportError with the reason."""
    try:
        return importlib.import_module("vllm._custom_ops")
    except Exception as exc:  # vllm raises various errors when its native parts are missing
        raise ImportError(f"vllm not installed ({type(exc).__name__}: {exc})".splitlines()[0]) from exc


class _VllmCudaOp(Implementation):
    op_name = ""
    packages = ("vllm",)

    def load(self) -> None:
        _vllm_ops()
        import torch

        if not hasattr(torch.ops._C_cache_ops, self.op_name):
            raise ImportError(f"this vllm build has no torch.ops._C_cache_ops.{self.op_name} (a CPU build?)")

    def bind(self, w: Workload) -> Writer:
        op = getattr(_vllm_ops(), self.op_name)
        args = (w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, w.case.kv_cache_dtype, w.k_scale, w.v_scale)
        return lambda: op(*args)


class VllmPaged(_VllmCudaOp):
    name = "vllm"
    description = "vLLM's CUDA reshape_and_cache (paged layout)"
    layouts = ("paged",)
    op_name = "reshape_and_cache"
    fp8_check = "tolerance"  # not measured bit-exact on a GPU; vLLM's own test tolerance


class VllmFlash(_VllmCudaOp):
    name = "vllm-flash"
    description = "vLLM's CUDA reshape_and_cache_flash (NHD/HND)"
    per_head_scales = True
    op_name = "reshape_and_cache_flash"


class VllmTriton(Implementation):
    name = "vllm-triton"
    description = "vLLM's Triton triton_reshape_and_cache_flash (NHD)"
    layouts = ("nhd",)
    packages = ("vllm",)
    fp8_check = "tolerance"

    def _function(self):
        errors = []
        for module in TRITON_MODULES:
            try:
                return importlib.import_module(module).triton_reshape_and_cache_flash
            except (ImportError, AttributeError) as exc:
                errors.append(f"{module}: {exc}")
        raise ImportError("vllm's Triton write op not found (" + "; ".join(errors) + ")")

    def load(self) -> None:
        _vllm_ops()
        self._function()

    def bind(self, w: Workload) -> Writer:
        fn = self._function()
        args = (w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, w.case.kv_cache_dtype, w.k_scale, w.v_scale)
        return lambda: fn(*args)
