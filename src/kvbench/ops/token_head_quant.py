"""vLLM's KV-cache write with dynamic per-token-head quantization: its Triton op
`triton_reshape_and_cache_flash_per_token_head_quant(key, value, key_cache, value_cache, k_scale_cache,
v_scale_cache, slot_mapping, kv_quant_mode)`.

A call reads key and value [num_tokens, num_heads, head_size] and, for each token with a valid slot and each head,
computes s = max(amax / QMAX, 1e-6) over that head's row (QMAX 127 for an int8 cache, 448 for fp8 e4m3), stores s
(float32) in the scale cache [num_blocks, block_size, num_heads] and the row times 1 / s in the NHD cache
[num_blocks, block_size, num_heads, head_size]: int8 rounded half away from zero (q +- 0.5, clamped to [-128, 127],
truncated), fp8 clamped to +-448 and rounded to nearest. Key and value each have their own scales. Read from vLLM
0.33's vllm/v1/attention/ops/triton_reshape_and_cache_flash.py and tests/quantization/test_per_token_kv_cache.py.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from kvbench.ops import slots
from kvbench.ops.base import Output, WriteCase, Workload, positive

CACHE_DTYPES = {"int8": torch.int8, "fp8": torch.float8_e4m3fn}
QMAX = {"int8": 127.0, "fp8": 448.0}
MIN_SCALE = 1e-6


@dataclasses.dataclass(frozen=True)
class Case(WriteCase):
    """A write of `num_tokens` tokens of num_heads x head_size with a scale per token and head."""

    OP: ClassVar[str] = "token-head-quant"
    KV_CACHE_DTYPES: ClassVar[tuple[str, ...]] = tuple(CACHE_DTYPES)

    kv_cache_dtype: str = "int8"
    num_heads: int = 8
    head_size: int = 128

    def __post_init__(self):
        super().__post_init__()
        positive(self, "num_heads", "head_size")

    @property
    def cache_dtype(self) -> torch.dtype:
        return CACHE_DTYPES[self.kv_cache_dtype]

    @property
    def cache_bytes(self) -> int:
        return 2 * self.num_slots * self.num_heads * (self.head_size + 4)

    @property
    def input_bytes(self) -> int:
        return 2 * self.num_tokens * self.num_heads * self.head_size * self.input_element_size

    @property
    def bytes_moved(self) -> int:
        """Key and value read once; one byte per element and a float32 scale per head written, per valid token."""
        return self.valid_tokens * 2 * self.num_heads * (self.head_size * (self.input_element_size + 1) + 4)


@dataclasses.dataclass
class QuantWorkload(Workload):
    INPUT_NAMES: ClassVar[tuple[str, ...]] = ("key", "value", "slot_mapping")

    key: torch.Tensor  # [num_tokens, heads, head_size]
    value: torch.Tensor
    key_cache: torch.Tensor  # [num_blocks, block_size, heads, head_size], int8 or float8_e4m3fn
    value_cache: torch.Tensor
    k_scale_cache: torch.Tensor  # float32 [num_blocks, block_size, heads]
    v_scale_cache: torch.Tensor

    def inputs(self) -> list[torch.Tensor]:
        return [self.key, self.value, self.slot_mapping]

    def outputs(self) -> list[torch.Tensor]:
        return [self.key_cache, self.value_cache, self.k_scale_cache, self.v_scale_cache]

    def expected(self) -> list[Output]:
        _, tokens = slots.valid(self.slot_mapping)
        out = []
        fmt = "e4m3" if self.case.kv_cache_dtype == "fp8" else None
        for which, x, cache, scale_cache in (("key", self.key, self.key_cache, self.k_scale_cache),
                                             ("value", self.value, self.value_cache, self.v_scale_cache)):
            q, s = quantize(x[tokens], self.case.kv_cache_dtype)
            out.append(Output(f"{which} cache", cache, cache, q, ("head", "dim"), fmt, s[:, :, None], x[tokens]))
            out.append(Output(f"{which} scales", scale_cache, scale_cache, s, ("head",), is_scale=True))
        return out


def quantize(x: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes [tokens, heads, head_size] in the cache dtype, float32 scales [tokens, heads]) of x."""
    xf = x.float()
    amax = xf.abs().amax(dim=-1)
    # IEEE divisions by tensors: divided by a Python number, CUDA tensors are multiplied by its reciprocal
    s = torch.clamp(amax / torch.full_like(amax, QMAX[kind]), min=MIN_SCALE)
    q = xf * (torch.ones_like(s) / s)[..., None]
    if kind == "int8":
        q = torch.where(q >= 0, q + 0.5, q - 0.5).clamp(-128.0, 127.0)
        return q.to(torch.int8), s  # float -> int truncates toward zero
    return q.clamp(-QMAX[kind], QMAX[kind]).to(CACHE_DTYPES[kind]), s


def make(case: Case, seed: int, slot_mapping: torch.Tensor, caches: list | None = None) -> QuantWorkload:
    gen = torch.Generator(device=case.device).manual_seed(seed)
    shape = (case.num_tokens, case.num_heads, case.head_size)
    kw = dict(generator=gen, device=case.device, dtype=case.torch_dtype)
    key, value = torch.randn(shape, **kw), torch.randn(shape, **kw)
    if caches:
        key_cache, value_cache, k_scales, v_scales = caches
    else:
        nb, bs, h, d = case.num_blocks, case.block_size, case.num_heads, case.head_size
        key_cache, value_cache = (torch.empty(nb, bs, h, d, dtype=case.cache_dtype, device=case.device)
                                  for _ in range(2))
        k_scales, v_scales = (torch.empty(nb, bs, h, dtype=torch.float32, device=case.device) for _ in range(2))
    return QuantWorkload(case, slot_mapping, key, value, key_cache, value_cache, k_scales, v_scales)


def reference_write(w: QuantWorkload) -> None:
    """Quantize and store every valid token (torch ops; padding skipped without a host sync)."""
    n = w.slot_mapping.shape[0]
    src, where, any_valid = slots.graph_safe(w.slot_mapping)
    bs = w.case.block_size
    block, offset = torch.div(where, bs, rounding_mode="floor"), where % bs
    for x, cache, scale_cache in ((w.key, w.key_cache, w.k_scale_cache), (w.value, w.value_cache, w.v_scale_cache)):
        q, s = quantize(x[:n][src], w.case.kv_cache_dtype)
        cache[block, offset] = torch.where(any_valid, q.view(torch.uint8), cache[block, offset].view(torch.uint8)
                                           ).view(cache.dtype)
        scale_cache[block, offset] = torch.where(any_valid, s, scale_cache[block, offset])
