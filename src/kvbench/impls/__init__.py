"""Who writes: the registry of implementations, in the order tables list them.

Each implementation writes one op (kvbench.ops). Modules named in KVBENCH_PLUGINS are imported after the built-in
ones and may add more with `register` (tests use this to put deliberately wrong writers through the asv suite).
"""

from __future__ import annotations

import importlib

from kvbench import config
from kvbench.errors import CaseError, ConfigError
from kvbench.impls.base import Implementation
from kvbench.impls.own_triton import TritonWrite
from kvbench.impls.torch_ref import TorchReference
from kvbench.impls.vllm_cpu import VllmCpu
from kvbench.impls.vllm_cuda import VllmFlash, VllmPaged, VllmTriton

REGISTRY: dict[str, Implementation] = {}


def register(impl: Implementation) -> None:
    REGISTRY[impl.name] = impl


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> Implementation:
    try:
        return REGISTRY[name]
    except KeyError:
        raise CaseError(f"implementation {name!r} is not supported; choose one of: {', '.join(REGISTRY)}") from None


for _impl in (TorchReference(), TritonWrite(), VllmPaged(), VllmFlash(), VllmTriton(), VllmCpu()):
    register(_impl)
for _module in config.plugins():
    try:
        importlib.import_module(_module)
    except ImportError as exc:
        raise ConfigError(f"KVBENCH_PLUGINS: module {_module!r} cannot be imported ({exc})") from None
