"""One benchmark case: the shapes and dtypes of a KV-cache write, with vLLM's defaults and validation.

Defaults and choices follow vLLM's `benchmarks/kernels/benchmark_reshape_and_cache.py`.
Every validation error is one line that names the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses

import torch

from kvbench.errors import CaseError

HEAD_SIZES = (64, 80, 96, 112, 120, 128, 192, 256)
BLOCK_SIZES = (16, 32)
DTYPES = {"half": torch.float16, "bfloat16": torch.bfloat16, "float": torch.float32}
# kv_cache_dtype string -> fp8 format stored in the cache (None: the input dtype is stored).
KV_CACHE_DTYPES = {"auto": None, "fp8": "e4m3", "fp8_e4m3": "e4m3", "fp8_e5m2": "e5m2"}
LAYOUTS = ("paged", "nhd", "hnd", "cpu-vec")
FLASH_LAYOUTS = ("nhd", "hnd")
FP8_SCALES = ("tensor", "head")
DEVICES = ("cuda", "cpu")
# random: unique random slots (vLLM's benchmark); prefill: sequences of PREFILL_SEQ_LEN tokens, each filling
# consecutive slots of its own random blocks; decode: one token per sequence, each in a distinct random block.
SLOT_PATTERNS = ("random", "prefill", "decode")
PREFILL_SEQ_LEN = 512  # a multiple of every block size: sequences need no more blocks than num_slots allows
# warm: the same inputs and slots every call (vLLM's method; small cases live in L2); cold: rotate through enough
# input sets and slot mappings that the data touched exceeds the L2 several times over.
L2_STATES = ("warm", "cold")


def _choose(what: str, value, allowed) -> None:
    if value not in allowed:
        names = ", ".join(str(a) for a in allowed)
        raise CaseError(f"{what} {value!r} is not supported; choose one of: {names}")


@dataclasses.dataclass(frozen=True)
class Case:
    """A KV-cache write of `num_tokens` tokens into a cache of `num_blocks` blocks."""

    num_tokens: int
    num_heads: int = 128
    head_size: int = 128
    block_size: int = 16
    num_blocks: int = 16384
    dtype: str = "bfloat16"
    kv_cache_dtype: str = "auto"
    layout: str = "nhd"
    device: str = "cuda"
    fp8_scales: str = "tensor"
    slots: str = "random"
    l2: str = "warm"
    seed: int = 42

    def __post_init__(self):
        for name in ("num_tokens", "num_heads", "num_blocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise CaseError(f"{name} {value!r} is not supported; it must be a positive integer")
        _choose("head_size", self.head_size, HEAD_SIZES)
        _choose("block_size", self.block_size, BLOCK_SIZES)
        _choose("dtype", self.dtype, tuple(DTYPES))
        _choose("kv_cache_dtype", self.kv_cache_dtype, tuple(KV_CACHE_DTYPES))
        _choose("layout", self.layout, LAYOUTS)
        _choose("device", self.device, DEVICES)
        _choose("fp8_scales", self.fp8_scales, FP8_SCALES)
        _choose("slots", self.slots, SLOT_PATTERNS)
        _choose("l2", self.l2, L2_STATES)
        if self.is_fp8 and self.head_size % 16:
            ok = ", ".join(str(h) for h in HEAD_SIZES if h % 16 == 0)
            raise CaseError(
                f"head_size {self.head_size} does not work with kv_cache_dtype {self.kv_cache_dtype!r}: "
                f"fp8 needs head_size % 16 == 0 ({ok})"
            )
        if self.fp8_scales == "head" and self.layout not in FLASH_LAYOUTS:
            raise CaseError(
                f"fp8_scales 'head' is not supported with layout {self.layout!r}; "
                f"per-head scales need one of: {', '.join(FLASH_LAYOUTS)}"
            )
        if self.num_tokens > self.num_slots:
            need = -(-self.num_tokens // self.block_size)
            raise CaseError(
                f"num_tokens {self.num_tokens} exceeds the cache's {self.num_slots} slots "
                f"(num_blocks {self.num_blocks} x block_size {self.block_size}); use --num-blocks {need} or more"
            )
        if self.slots == "decode" and self.num_tokens > self.num_blocks:
            raise CaseError(
                f"num_tokens {self.num_tokens} exceeds num_blocks {self.num_blocks}: slots 'decode' puts each token "
                f"in its own block; use --num-blocks {self.num_tokens} or more"
            )

    @property
    def num_slots(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def fp8_format(self) -> str | None:
        """'e4m3', 'e5m2', or None when the cache stores the input dtype."""
        return KV_CACHE_DTYPES[self.kv_cache_dtype]

    @property
    def is_fp8(self) -> bool:
        return self.fp8_format is not None

    @property
    def cache_dtype(self) -> torch.dtype:
        """The torch dtype of the cache tensors (fp8 caches are uint8, as in vLLM)."""
        return torch.uint8 if self.is_fp8 else self.torch_dtype

    @property
    def input_element_size(self) -> int:
        return torch.empty((), dtype=self.torch_dtype).element_size()

    @property
    def cache_element_size(self) -> int:
        return 1 if self.is_fp8 else self.input_element_size

    def replace(self, **changes) -> "Case":
        return dataclasses.replace(self, **changes)

    def label(self) -> str:
        return (
            f"{self.num_tokens} tokens, {self.num_heads}x{self.head_size}, block {self.block_size}, "
            f"{self.num_blocks} blocks, {self.dtype}, kv {self.kv_cache_dtype}, {self.layout}, slots {self.slots}, "
            f"L2 {self.l2}, {self.device}"
        )
