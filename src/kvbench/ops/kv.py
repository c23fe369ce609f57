"""The KV-cache write of vLLM's `reshape_and_cache` (paged layout) and `reshape_and_cache_flash` (NHD/HND).

A call reads key and value [num_tokens, num_heads, head_size] and writes each token with a valid slot into the key
and value caches (layouts in kvbench.ops.layouts); an fp8 cache holds saturate(x / scale) rounded to nearest
(kvbench.ops.fp8), with a per-tensor scale or, for the flash layouts, one per head. Defaults and choices follow
vLLM's `benchmarks/kernels/benchmark_reshape_and_cache.py`.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from kvbench.errors import CaseError
from kvbench.ops import fp8, layouts, slots
from kvbench.ops.base import Output, WriteCase, Workload, choose, positive

HEAD_SIZES = (64, 80, 96, 112, 120, 128, 192, 256)
# kv_cache_dtype string -> fp8 format stored in the cache (None: the input dtype is stored).
KV_CACHE_DTYPES = {"auto": None, "fp8": "e4m3", "fp8_e4m3": "e4m3", "fp8_e5m2": "e5m2"}
FP8_SCALES = ("tensor", "head")


@dataclasses.dataclass(frozen=True)
class Case(WriteCase):
    """A KV-cache write of `num_tokens` tokens of num_heads x head_size into a cache of `num_blocks` blocks."""

    OP: ClassVar[str] = "kv"
    BLOCK_SIZES: ClassVar[tuple[int, ...]] = (16, 32, 64)  # vLLM's script: 16, 32; vLLM >= 0.34 serves 64
    FP8_FORMATS: ClassVar[dict[str, str | None]] = KV_CACHE_DTYPES  # the module's mapping (before the next line)
    KV_CACHE_DTYPES: ClassVar[tuple[str, ...]] = tuple(KV_CACHE_DTYPES)

    num_heads: int = 128
    head_size: int = 128
    layout: str = "nhd"
    fp8_scales: str = "tensor"

    def __post_init__(self):
        super().__post_init__()
        positive(self, "num_heads")
        choose("head_size", self.head_size, HEAD_SIZES)
        choose("layout", self.layout, layouts.LAYOUTS)
        choose("fp8_scales", self.fp8_scales, FP8_SCALES)
        if self.is_fp8 and self.head_size % 16:
            ok = ", ".join(str(h) for h in HEAD_SIZES if h % 16 == 0)
            raise CaseError(
                f"head_size {self.head_size} does not work with kv_cache_dtype {self.kv_cache_dtype!r}: "
                f"fp8 needs head_size % 16 == 0 ({ok})"
            )
        if self.fp8_scales == "head" and self.layout not in layouts.FLASH_LAYOUTS:
            raise CaseError(
                f"fp8_scales 'head' is not supported with layout {self.layout!r}; "
                f"per-head scales need one of: {', '.join(layouts.FLASH_LAYOUTS)}"
            )



    @property
    def cache_bytes(self) -> int:
        return 2 * self.num_slots * self.num_heads * self.head_size * self.cache_element_size

    @property
    def input_bytes(self) -> int:
        return 2 * self.num_tokens * self.num_heads * self.head_size * self.input_element_size

    @property
    def bytes_moved(self) -> int:
        """Each input element of a valid token read once and each of its cache elements written once, for key and
        value (what vLLM's kernels must move; scales and slot numbers are negligible)."""
        per_token = 2 * self.num_heads * self.head_size * (self.input_element_size + self.cache_element_size)
        return self.valid_tokens * per_token


@dataclasses.dataclass
class KVWorkload(Workload):
    INPUT_NAMES: ClassVar[tuple[str, ...]] = ("key", "value", "slot_mapping", "k_scale", "v_scale")

    key: torch.Tensor  # [num_tokens, heads, head_size]
    value: torch.Tensor
    key_cache: torch.Tensor
    value_cache: torch.Tensor
    k_scale: torch.Tensor  # float32, 0-dim or [heads]; 1.0 when the cache is not fp8
    v_scale: torch.Tensor

    def inputs(self) -> list[torch.Tensor]:
        return [self.key, self.value, self.slot_mapping, self.k_scale, self.v_scale]

    def outputs(self) -> list[torch.Tensor]:
        return [self.key_cache, self.value_cache]

    def expected(self) -> list[Output]:
        c = self.case
        valid_slots, tokens = slots.valid(self.slot_mapping)
        out = []
        for which, x, scale, cache in (("key", self.key, self.k_scale, self.key_cache),
                                       ("value", self.value, self.v_scale, self.value_cache)):
            view, offset_dims = layouts.slot_view(c.layout, which, cache)
            rows = x[tokens]
            out.append(Output(f"{which} cache", cache, view, stored(rows, scale, c), ("head", "dim"), c.fp8_format,
                              scale, rows, offset_dims))
        return out


def stored(x: torch.Tensor, scale: torch.Tensor, case: Case) -> torch.Tensor:
    """What the cache must hold for inputs x [tokens, heads, head_size]: x itself, or its fp8 codes."""
    return fp8.quantize(x, scale, case.fp8_format) if case.is_fp8 else x


def random_inputs(case: Case, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """key and value [num_tokens, heads, head_size] drawn from N(0, 1) (vLLM's benchmark: torch.randn)."""
    gen = torch.Generator(device=case.device).manual_seed(seed)
    shape = (case.num_tokens, case.num_heads, case.head_size)
    key = torch.randn(shape, generator=gen, device=case.device, dtype=case.torch_dtype)
    value = torch.randn(shape, generator=gen, device=case.device, dtype=case.torch_dtype)
    return key, value


def make(case: Case, seed: int, slot_mapping: torch.Tensor, caches: tuple | None = None) -> KVWorkload:
    """A workload with inputs drawn from `seed`, the given slots, and freshly allocated caches unless given."""
    key, value = random_inputs(case, seed)
    per_head = case.fp8_scales == "head"
    if case.is_fp8:
        k_scale, v_scale = fp8.scales(key, per_head), fp8.scales(value, per_head)
    else:
        k_scale = v_scale = torch.ones((), dtype=torch.float32, device=case.device)
    key_cache, value_cache = caches or layouts.allocate(case)
    return KVWorkload(case, slot_mapping, key, value, key_cache, value_cache, k_scale, v_scale)


def reference_write(case: Case, key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale) -> None:
    """Write key/value rows [: len(slot_mapping)] into the caches at their slots; negative slots are skipped.

    It can be captured in a CUDA graph: padding is skipped without a host sync (kvbench.ops.slots.graph_safe).
    """
    n = slot_mapping.shape[0]
    src, where, any_valid = slots.graph_safe(slot_mapping)
    for which, x, scale, cache in (("key", key, k_scale, key_cache), ("value", value, v_scale, value_cache)):
        data = stored(x[:n][src], scale, case)
        current = layouts.gather(case.layout, which, cache, where[:1])
        data = torch.where(any_valid, data, current)
        layouts.scatter(case.layout, which, cache, where, data)
