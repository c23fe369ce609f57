"""The registry of KV-cache write implementations, in the order tables list them."""

from __future__ import annotations

from kvbench.errors import CaseError
from kvbench.impls.base import Implementation
from kvbench.impls.torch_ref import TorchReference
from kvbench.impls.triton_impl import TritonWrite
from kvbench.impls.vllm_cpu import VllmCpu
from kvbench.impls.vllm_cuda import VllmFlash, VllmPaged, VllmTriton

REGISTRY: dict[str, Implementation] = {
    impl.name: impl for impl in (TorchReference(), TritonWrite(), VllmPaged(), VllmFlash(), VllmTriton(), VllmCpu())
}


def register(impl: Implementation) -> None:
    REGISTRY[impl.name] = impl


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> Implementation:
    try:
        return REGISTRY[name]
    except KeyError:
        raise CaseError(f"implementation {name!r} is not supported; choose one of: {', '.join(REGISTRY)}") from None
