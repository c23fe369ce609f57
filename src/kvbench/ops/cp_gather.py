"""vLLM's `cp_gather_cache(src_cache, dst, block_table, cu_seq_lens, batch_size, seq_starts)`: the latent cache's
rows of a batch of sequences copied as they are into a dense workspace (MLA's chunked-prefill context with an fp8
prefill, context parallelism, and the models that read an fp8 MLA cache without converting it).

For each sequence b < batch_size and each of its tokens i < cu_seq_lens[b + 1] - cu_seq_lens[b]: position
p = i + seq_starts[b] (any offset: vLLM's kernel allows starts inside a block), dst[cu_seq_lens[b] + i] =
src_cache[block_table[b, p / block_size], p % block_size], the whole entry (all dims after the first two) copied
bit for bit: src and dst have the same dtype (8, 16 or 32 bits; an fp8 cache is uint8 codes, copied as bytes).
Read from vLLM's csrc/cache_kernels.cu (cp_gather_cache), its callers (model_executor/layers/attention/
mla_attention.py) and tests (tests/kernels/attention/test_cache.py, test_cp_gather_cache_mla).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from kvbench.ops import fp8, reads
from kvbench.ops.base import Output

KV_CACHE_DTYPES = {"auto": None, "fp8": "e4m3"}  # fp8: the cache is uint8 codes (copied as bytes)


@dataclasses.dataclass(frozen=True)
class Case(reads.MLARowsCase):
    """`num_tokens` MLA latent rows copied out of a cache of num_blocks x block_size."""

    OP: ClassVar[str] = "cp-gather"
    START_ALIGN: ClassVar[int | None] = 1
    FP8_FORMATS: ClassVar[dict[str, str | None]] = {}  # no conversion: the bytes are copied
    KV_CACHE_DTYPES: ClassVar[tuple[str, ...]] = tuple(KV_CACHE_DTYPES)

    @property
    def cache_dtype(self) -> torch.dtype:
        return torch.uint8 if self.kv_cache_dtype == "fp8" else self.torch_dtype

    @property
    def element_size(self) -> int:
        return 1 if self.kv_cache_dtype == "fp8" else self.input_element_size

    @property
    def cache_bytes(self) -> int:
        return (self.num_slots + self.num_tokens + reads.DENSE_SLACK) * self.entry * self.element_size

    @property
    def input_bytes(self) -> int:
        return 16 * self.num_tokens

    @property
    def bytes_moved(self) -> int:
        """Each row read once and written once."""
        return 2 * self.num_tokens * self.entry * self.element_size


@dataclasses.dataclass
class CpGatherWorkload(reads.SeqGatherWorkload):
    """src_cache [num_blocks, block_size, entry]; dst [num_tokens + DENSE_SLACK, entry], the cache's dtype."""

    def expected(self) -> list[Output]:
        return [reads.dense_output("gathered rows", self.dst, gathered(self), ("element",))]


def gathered(w: CpGatherWorkload) -> torch.Tensor:
    """[num_tokens, entry]: each sequence's rows from its start, found from the op's inputs (reads.source_slots,
    sequences from cu_seq_lens)."""
    c, b = w.case, w.batch
    where = reads.source_slots(b.block_table, b.cu_seq_lens, b.seq_starts, c.block_size, c.num_tokens)
    return w.src_cache.view(-1, c.entry).index_select(0, where)


def make(case: Case, seed: int) -> CpGatherWorkload:
    gen = torch.Generator(device=case.device).manual_seed(seed)
    shape = (case.num_blocks, case.block_size, case.entry)
    if case.kv_cache_dtype == "fp8":
        cache = reads.random_fp8_codes(shape, fp8.FORMATS["e4m3"], gen, case.device)
    else:
        cache = reads.random_values(shape, case.torch_dtype, gen, case.device)
    batch = reads.make_batch(case)
    dst = reads.dense(case.num_tokens, (case.entry,), case.cache_dtype, case.device)
    return CpGatherWorkload(case, batch.source_slots, cache, dst, batch)


def make_workloads(case: Case, seed: int, sets: int = 1) -> list[CpGatherWorkload]:
    return [make(case, seed)]


def reference_write(w: CpGatherWorkload) -> None:
    w.dst[: w.case.num_tokens].copy_(gathered(w))
