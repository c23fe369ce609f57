"""Adapters to vLLM's CUDA KV-cache write ops (`vllm._custom_ops`) and vLLM's Triton flash op.

All take `op(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale, v_scale)` with scales as
float32 device tensors (vLLM >= Jan 2025). The flash ops read the layout from the caches' shape and strides:
block_size = key_cache.size(1), so HND storage ([blocks, heads, block_size, head_size] in memory) must be passed
as its NHD-shaped view (dims 1 and 2 swapped, HND strides), as vLLM's attention backends pass it; the HND-shaped
tensor itself makes them read block_size = num_heads and write the wrong places. Imports are guarded: without a
CUDA build of vLLM these implementations report why they are unavailable.
"""

from __future__ import annotations

import importlib

from kvbench.impls.base import Implementation, Writer
from kvbench.ops.kv import KVWorkload

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


def flash_args(w: KVWorkload) -> tuple:
    """The eight arguments of vLLM's flash ops; HND caches as their NHD-shaped views."""
    key_cache, value_cache = w.key_cache, w.value_cache
    if w.case.layout == "hnd":
        key_cache, value_cache = key_cache.transpose(1, 2), value_cache.transpose(1, 2)
    return (w.key, w.value, key_cache, value_cache, w.slot_mapping, w.case.kv_cache_dtype, w.k_scale, w.v_scale)


class _VllmCudaOp(Implementation):
    op_name = ""
    packages = ("vllm",)

    def load(self) -> None:
        _vllm_ops()
        import torch

        if not hasattr(torch.ops._C_cache_ops, self.op_name):
            raise ImportError(f"this vllm build has no torch.ops._C_cache_ops.{self.op_name} (a CPU build?)")

    def bind(self, w: KVWorkload) -> Writer:
        op = getattr(_vllm_ops(), self.op_name)
        args = flash_args(w)
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
    description = "vLLM's Triton triton_reshape_and_cache_flash (NHD/HND)"
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

    def bind(self, w: KVWorkload) -> Writer:
        fn = self._function()
        args = flash_args(w)
        return lambda: fn(*args)
