"""Who writes: the registry of implementations, per op (kvbench.ops), in the order tables list them.

Names are per op: `torch` is each op's reference, `triton` kvbench's own kernel, `vllm*` vLLM's. Modules named in KVBENCH_PLUGINS are imported after the built-in
ones and may add more with `register` (tests use this to put deliberately wrong writers through the asv suite).
"""

from __future__ import annotations

import importlib

from kvbench import config
from kvbench.errors import CaseError, ConfigError
from kvbench.impls.base import Implementation
from kvbench.impls import own_triton, torch_ref, vllm_cuda
from kvbench.impls.vllm_cpu import VllmCpu

REGISTRY: dict[str, dict[str, Implementation]] = {}  # op -> name -> implementation


def register(impl: Implementation) -> None:
    REGISTRY.setdefault(impl.op, {})[impl.name] = impl


def of(op: str = "kv") -> dict[str, Implementation]:
    return REGISTRY.get(op, {})


def names(op: str = "kv") -> tuple[str, ...]:
    return tuple(of(op))


def all_names() -> tuple[str, ...]:
    """Every implementation name of every op, once (for command-line choices)."""
    return tuple(dict.fromkeys(name for by_name in REGISTRY.values() for name in by_name))


def get(name: str, op: str = "kv") -> Implementation:
    try:
        return of(op)[name]
    except KeyError:
        raise CaseError(f"implementation {name!r} is not supported for op {op!r}; choose one of: "
                        f"{', '.join(of(op))}") from None


for _impl in (torch_ref.TorchReference(), own_triton.TritonWrite(), vllm_cuda.VllmPaged(), vllm_cuda.VllmFlash(),
              vllm_cuda.VllmTriton(), VllmCpu(),
              torch_ref.TorchMLA(), own_triton.TritonMLA(), vllm_cuda.VllmMLA(),
              torch_ref.TorchIndexer(), own_triton.TritonIndexer(), vllm_cuda.VllmIndexer(),
              torch_ref.TorchTokenHeadQuant(), own_triton.TritonTokenHeadQuant(), vllm_cuda.VllmTokenHeadQuant(),
              torch_ref.TorchConvertFp8(), own_triton.TritonConvertFp8(), vllm_cuda.VllmConvertFp8(),
              torch_ref.TorchGather(), own_triton.TritonGather(), vllm_cuda.VllmGather(),
              torch_ref.TorchCpGather(), own_triton.TritonCpGather(), vllm_cuda.VllmCpGather(),
              torch_ref.TorchSwapBlocks(), vllm_cuda.VllmSwapBlocks(), vllm_cuda.VllmSwapBlocksBatch(),
              torch_ref.TorchIndexerGather(), own_triton.TritonIndexerGather(), vllm_cuda.VllmIndexerGather(),
              torch_ref.TorchUpconvertGather(), own_triton.TritonUpconvertGather(), vllm_cuda.VllmUpconvertGather(),
              torch_ref.TorchMLAGrouped(), vllm_cuda.VllmMLAGrouped(),
              torch_ref.TorchConcatMLAQ(), vllm_cuda.VllmConcatMLAQ(),
              torch_ref.TorchMLARope(), vllm_cuda.VllmMLARope()):
    register(_impl)
for _module in config.plugins():
    try:
        importlib.import_module(_module)
    except ImportError as exc:
        raise ConfigError(f"KVBENCH_PLUGINS: module {_module!r} cannot be imported ({exc})") from None
