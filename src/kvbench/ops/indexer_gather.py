"""vLLM's `cp_gather_indexer_k_quant_cache(kv_cache, dst_k, dst_scale, block_table, cu_seq_lens)`: DeepSeek-V3.2's
indexer keys read back for the prefill's top-k selection (model_executor/layers/sparse_attn_indexer.py, every
layer of a prefill with cached context), the reverse of `indexer_k_quant_and_cache` (kvbench.ops.indexer).

The cache is uint8 [num_blocks, block_size, head_dim + head_dim / 128 * 4] laid out per block (the block's
block_size x head_dim fp8 codes, then its block_size x head_dim / 128 four-byte scales). For each destination row
t < dst_k.size(0): its sequence b (cu_seq_lens[b] <= t < cu_seq_lens[b + 1]), its position p = t - cu_seq_lens[b]
(the op takes no starts), block = block_table[b, p / block_size], o = p % block_size: dst_k[t] = the block's
head_dim code bytes of slot o, dst_scale[t] = its head_dim / 128 scales (4 bytes each), copied bit for bit.
dst_k and dst_scale have exactly as many rows as tokens (vLLM's kernel takes its token count from dst_k). Read
from vLLM's csrc/cache_kernels.cu (cp_gather_indexer_k_quant_cache_kernel) and its callers.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from kvbench.errors import CaseError
from kvbench.ops import fp8, indexer, reads
from kvbench.ops.base import Output, Workload, positive


@dataclasses.dataclass(frozen=True)
class Case(reads.ReadCase):
    """`num_tokens` indexer keys (codes and scales) gathered out of a cache of num_blocks x block_size."""

    OP: ClassVar[str] = "indexer-gather"
    START_ALIGN: ClassVar[int | None] = None  # no starts
    KV_CACHE_DTYPES: ClassVar[tuple[str, ...]] = ("fp8",)

    kv_cache_dtype: str = "fp8"
    head_dim: int = 128

    def __post_init__(self):
        super().__post_init__()
        positive(self, "head_dim")
        if self.head_dim % indexer.QUANT_BLOCK:
            raise CaseError(f"head_dim {self.head_dim} is not supported; it must be a multiple of "
                            f"{indexer.QUANT_BLOCK}")

    @property
    def groups(self) -> int:
        return self.head_dim // indexer.QUANT_BLOCK

    @property
    def entry_bytes(self) -> int:
        return self.head_dim + 4 * self.groups

    @property
    def cache_bytes(self) -> int:
        return (self.num_slots + self.num_tokens + reads.DENSE_SLACK) * self.entry_bytes

    @property
    def input_bytes(self) -> int:
        return 16 * self.num_tokens

    @property
    def bytes_moved(self) -> int:
        """Each token's codes and scales read once and written once."""
        return 2 * self.num_tokens * self.entry_bytes


@dataclasses.dataclass
class IndexerGatherWorkload(Workload):
    INPUT_NAMES: ClassVar[tuple[str, ...]] = ("kv_cache", "block_table", "cu_seq_lens")

    kv_cache: torch.Tensor  # uint8 [num_blocks, block_size, entry_bytes], block-major (kvbench.ops.indexer.views)
    k_all: torch.Tensor  # uint8 [num_tokens + DENSE_SLACK, head_dim]
    scale_all: torch.Tensor  # uint8 [num_tokens + DENSE_SLACK, groups * 4]
    batch: reads.Batch

    @property
    def dst_k(self) -> torch.Tensor:
        return self.k_all[: self.case.num_tokens]

    @property
    def dst_scale(self) -> torch.Tensor:
        return self.scale_all[: self.case.num_tokens]

    def inputs(self) -> list[torch.Tensor]:
        return [self.kv_cache, self.batch.block_table, self.batch.cu_seq_lens]

    def outputs(self) -> list[torch.Tensor]:
        return [self.k_all, self.scale_all]

    def expected(self) -> list[Output]:
        codes, scales = gathered(self)
        return [reads.dense_output("gathered indexer codes", self.k_all, codes, ("dim",)),
                reads.dense_output("gathered indexer scales", self.scale_all, scales, ("byte",))]


def gathered(w: IndexerGatherWorkload) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes [num_tokens, head_dim], scale bytes [num_tokens, groups * 4]) read at the tokens' slots."""
    c, b = w.case, w.batch
    where = reads.source_slots(b.block_table, b.cu_seq_lens, None, c.block_size, c.num_tokens)
    block, offset = torch.div(where, c.block_size, rounding_mode="floor"), where % c.block_size
    code_view, scale_view = indexer.views(c, w.kv_cache)
    return code_view[block, offset], scale_view[block, offset]


def make(case: Case, seed: int) -> IndexerGatherWorkload:
    """A cache of valid e4m3 codes and positive float32 scales (powers of two, as ue8m0 writes them)."""
    gen = torch.Generator(device=case.device).manual_seed(seed)
    cache = reads.random_fp8_codes((case.num_blocks, case.block_size, case.entry_bytes), fp8.FORMATS["e4m3"], gen,
                                   case.device)
    exponents = torch.randint(-12, 3, (case.num_blocks, case.block_size, case.groups), generator=gen,
                              device=case.device)
    _, scale_view = indexer.views(case, cache)
    scale_view.copy_(torch.exp2(exponents.float()).view(torch.uint8).view(scale_view.shape))
    batch = reads.make_batch(case)
    k_all = reads.dense(case.num_tokens, (case.head_dim,), torch.uint8, case.device)
    scale_all = reads.dense(case.num_tokens, (4 * case.groups,), torch.uint8, case.device)
    return IndexerGatherWorkload(case, batch.source_slots, cache, k_all, scale_all, batch)


def make_workloads(case: Case, seed: int, sets: int = 1) -> list[IndexerGatherWorkload]:
    return [make(case, seed)]


def reference_write(w: IndexerGatherWorkload) -> None:
    codes, scales = gathered(w)
    w.dst_k.copy_(codes)
    w.dst_scale.copy_(scales)
