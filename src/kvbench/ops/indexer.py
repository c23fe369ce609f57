"""vLLM's DeepSeek V3.2 indexer-key write, `indexer_k_quant_and_cache(k, kv_cache, slot_mapping, quant_block_size,
scale_fmt)` (vLLM names the last argument kv_cache_dtype; it selects the scale format).

A call reads k [num_tokens, head_dim] and, for each token with a valid slot, stores fp8 e4m3 codes of k / s, one
scale s per group of quant_block_size (128) values. The cache is uint8 [num_blocks, block_size, head_dim +
head_dim / 128 * 4] laid out per block, not per row: the block's block_size x head_dim codes first (token o's at
o * head_dim), then its block_size x head_dim / 128 scales of 4 bytes (token o's group g at block_size * head_dim
+ 4 * (o * head_dim / 128 + g)). The scale: u = max(amax, 1e-4) / 448 (IEEE division), then
- `ue8m0` (DeepSeek V3.2's default): s = 2**ceil(log2(u)), stored as float32;
- `fp32`: s = u as float32 (vLLM: any string other than ue8m0/mxfp8, here the empty string);
- `mxfp8`: s as for ue8m0, stored as four copies of its biased exponent byte (head_dim 128 only).
Read from vLLM 0.33's kernel and its DeepSeek V3.2 callers (csrc/cache_kernels.cu; model_executor/layers/
sparse_attn_indexer.py).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from kvbench.errors import CaseError
from kvbench.ops import slots
from kvbench.ops.base import Output, WriteCase, Workload, choose, positive

QUANT_BLOCK = 128
SCALE_FORMATS = {"ue8m0": "ue8m0", "fp32": "", "mxfp8": "mxfp8"}  # ours -> the string vLLM's op is given
E4M3_MAX = 448.0


@dataclasses.dataclass(frozen=True)
class Case(WriteCase):
    """Indexer keys of `num_tokens` tokens of head_dim, fp8 with one scale per 128 values."""

    OP: ClassVar[str] = "indexer"
    BLOCK_SIZES: ClassVar[tuple[int, ...]] = (16, 64)
    KV_CACHE_DTYPES: ClassVar[tuple[str, ...]] = ("fp8",)

    kv_cache_dtype: str = "fp8"
    num_blocks: int = 2048
    block_size: int = 64
    head_dim: int = 128
    scale_fmt: str = "ue8m0"

    def __post_init__(self):
        super().__post_init__()
        positive(self, "head_dim")
        choose("scale_fmt", self.scale_fmt, tuple(SCALE_FORMATS))
        if self.head_dim % QUANT_BLOCK:
            raise CaseError(f"head_dim {self.head_dim} is not supported; it must be a multiple of {QUANT_BLOCK}")
        if self.scale_fmt == "mxfp8" and self.head_dim != QUANT_BLOCK:
            raise CaseError(f"scale_fmt 'mxfp8' needs head_dim {QUANT_BLOCK}; got {self.head_dim}")

    @property
    def groups(self) -> int:
        return self.head_dim // QUANT_BLOCK

    @property
    def entry_bytes(self) -> int:
        return self.head_dim + 4 * self.groups

    @property
    def cache_bytes(self) -> int:
        return self.num_slots * self.entry_bytes

    @property
    def input_bytes(self) -> int:
        return self.num_tokens * self.head_dim * self.input_element_size

    @property
    def bytes_moved(self) -> int:
        return self.valid_tokens * (self.head_dim * self.input_element_size + self.entry_bytes)


def views(case: Case, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes [blocks, block_size, head_dim], scale bytes [blocks, block_size, groups * 4]) of the cache."""
    per_block = cache.view(case.num_blocks, -1)
    codes = per_block[:, : case.block_size * case.head_dim].view(case.num_blocks, case.block_size, case.head_dim)
    scales = per_block[:, case.block_size * case.head_dim :].view(case.num_blocks, case.block_size, 4 * case.groups)
    return codes, scales


@dataclasses.dataclass
class IndexerWorkload(Workload):
    INPUT_NAMES: ClassVar[tuple[str, ...]] = ("k", "slot_mapping")

    k: torch.Tensor  # [num_tokens, head_dim]
    kv_cache: torch.Tensor  # uint8 [num_blocks, block_size, entry_bytes], laid out per block (see the module)

    def inputs(self) -> list[torch.Tensor]:
        return [self.k, self.slot_mapping]

    def outputs(self) -> list[torch.Tensor]:
        return [self.kv_cache]

    def expected(self) -> list[Output]:
        _, tokens = slots.valid(self.slot_mapping)
        codes, scale_bytes = quantize(self.k[tokens], self.case.scale_fmt)
        code_view, scale_view = views(self.case, self.kv_cache)
        return [Output("indexer codes", self.kv_cache, code_view, codes, ("dim",)),
                Output("indexer scales", self.kv_cache, scale_view, scale_bytes, ("byte",))]


def scales(k: torch.Tensor, scale_fmt: str) -> torch.Tensor:
    """float32 [tokens, groups]: max(amax, 1e-4) / 448 per group of 128, a power of two unless scale_fmt is fp32
    (log2 in float64 of the float32 value, rounded to float32, then the ceiling, as CUDA's log2f rounds)."""
    amax = k.float().abs().reshape(k.shape[0], -1, QUANT_BLOCK).amax(dim=2)
    u = torch.clamp(amax, min=1e-4) / torch.full_like(amax, E4M3_MAX)  # IEEE (by a scalar, CUDA multiplies)
    if scale_fmt == "fp32":
        return u
    return torch.exp2(torch.ceil(torch.log2(u.double()).float())).float()


def quantize(k: torch.Tensor, scale_fmt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes uint8 [tokens, head_dim], scale bytes uint8 [tokens, groups * 4]) the reference stores."""
    s = scales(k, scale_fmt)
    groups = k.float().reshape(k.shape[0], -1, QUANT_BLOCK) / s[:, :, None]
    codes = groups.clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).view(torch.uint8).reshape(k.shape[0], -1)
    if scale_fmt == "mxfp8":  # four copies of the biased exponent byte
        exponent = ((s.view(torch.int32) >> 23) & 0xFF).to(torch.uint8)
        return codes, exponent[:, :, None].expand(-1, -1, 4).reshape(k.shape[0], -1).contiguous()
    return codes, s.contiguous().view(torch.uint8).reshape(k.shape[0], -1)


def make(case: Case, seed: int, slot_mapping: torch.Tensor, caches: list | None = None) -> IndexerWorkload:
    gen = torch.Generator(device=case.device).manual_seed(seed)
    k = torch.randn(case.num_tokens, case.head_dim, generator=gen, device=case.device, dtype=case.torch_dtype)
    if caches:
        (kv_cache,) = caches
    else:
        kv_cache = torch.empty(case.num_blocks, case.block_size, case.entry_bytes, dtype=torch.uint8,
                               device=case.device)
    return IndexerWorkload(case, slot_mapping, k, kv_cache)


def reference_write(w: IndexerWorkload) -> None:
    """Quantize the valid tokens and store codes and scales at their places (torch ops; padding skipped without a
    host sync, as in the kv op's reference)."""
    n = w.slot_mapping.shape[0]
    src, where, any_valid = slots.graph_safe(w.slot_mapping)
    codes, scale_bytes = quantize(w.k[:n][src], w.case.scale_fmt)
    code_view, scale_view = views(w.case, w.kv_cache)
    block, offset = torch.div(where, w.case.block_size, rounding_mode="floor"), where % w.case.block_size
    codes = torch.where(any_valid, codes, code_view[block, offset])
    scale_bytes = torch.where(any_valid, scale_bytes, scale_view[block, offset])
    code_view[block, offset] = codes
    scale_view[block, offset] = scale_bytes
