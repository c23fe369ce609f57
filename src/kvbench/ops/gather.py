"""vLLM's `gather_and_maybe_dequant_cache(src_cache, dst, block_table, cu_seq_lens, token_to_seq, num_tokens,
kv_cache_dtype, scale, seq_starts)`: MLA's chunked-prefill context read back from the latent cache (DeepSeek-V3 and
the other MLA models, in every layer of a prefill with cached context).

For each destination row t < num_tokens: its sequence b = token_to_seq[t], its position in the sequence
p = t - cu_seq_lens[b] + seq_starts[b] (seq_starts: where the context chunk starts; vLLM's chunking keeps it a
multiple of block_size, which the kernel's documentation asks for), and dst[t] = src_cache[block_table[b, p /
block_size], p % block_size]: the 576-value row (kv_lora_rank 512 + rope 64; vLLM's kernel takes only 576) copied
(`auto`: the cache holds the dtype of dst) or dequantized (`fp8` / `fp8_e4m3`: uint8 e4m3 codes, dst = round(
float(code) * scale) to dst's dtype, scale a float32 tensor). Rows of dst after num_tokens are not written (vLLM
passes its whole workspace). Read from vLLM's csrc/cache_kernels.cu (gather_and_maybe_dequant_cache), its callers
(model_executor/layers/attention/mla_attention.py) and tests (tests/kernels/attention/test_cache.py).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from kvbench.ops import fp8, reads
from kvbench.ops.base import Output, Workload

KV_CACHE_DTYPES = {"auto": None, "fp8": "e4m3", "fp8_e4m3": "e4m3"}


@dataclasses.dataclass(frozen=True)
class Case(reads.MLARowsCase):
    """`num_tokens` MLA latent rows gathered (and dequantized from fp8) out of a cache of num_blocks x block_size."""

    OP: ClassVar[str] = "gather"
    START_ALIGN: ClassVar[int | None] = 0  # per block
    FP8_FORMATS: ClassVar[dict[str, str | None]] = KV_CACHE_DTYPES
    KV_CACHE_DTYPES: ClassVar[tuple[str, ...]] = tuple(KV_CACHE_DTYPES)

    @property
    def cache_bytes(self) -> int:
        return (self.num_slots * self.cache_element_size + (self.num_tokens + reads.DENSE_SLACK)
                * self.input_element_size) * self.entry

    @property
    def input_bytes(self) -> int:
        return 16 * self.num_tokens  # the batch's tables (the cache is counted in cache_bytes)

    @property
    def bytes_moved(self) -> int:
        """Each gathered row read once from the cache and written once (the tables are negligible)."""
        return self.num_tokens * self.entry * (self.cache_element_size + self.input_element_size)


@dataclasses.dataclass
class GatherWorkload(Workload):
    INPUT_NAMES: ClassVar[tuple[str, ...]] = ("src_cache", "block_table", "cu_seq_lens", "token_to_seq",
                                              "seq_starts", "scale")

    src_cache: torch.Tensor  # [num_blocks, block_size, entry]: dtype, or uint8 e4m3 codes
    dst: torch.Tensor  # [num_tokens + DENSE_SLACK, entry] of dtype
    batch: reads.Batch
    scale: torch.Tensor  # float32 [1]

    def inputs(self) -> list[torch.Tensor]:
        b = self.batch
        return [self.src_cache, b.block_table, b.cu_seq_lens, b.token_to_seq, b.seq_starts, self.scale]

    def outputs(self) -> list[torch.Tensor]:
        return [self.dst]

    def expected(self) -> list[Output]:
        return [reads.dense_output("gathered rows", self.dst, gathered(self), ("element",))]


def gathered(w: GatherWorkload) -> torch.Tensor:
    """[num_tokens, entry]: the rows the op stores, from its inputs (reads.source_slots), in torch ops."""
    c, b = w.case, w.batch
    where = reads.source_slots(b.block_table, b.cu_seq_lens, b.seq_starts, c.block_size, c.num_tokens,
                               b.token_to_seq)
    rows = w.src_cache.view(-1, c.entry).index_select(0, where)
    if not c.is_fp8:
        return rows
    return (rows.view(fp8.FORMATS[c.fp8_format]).float() * w.scale.float()).to(c.torch_dtype)


def make(case: Case, seed: int) -> GatherWorkload:
    gen = torch.Generator(device=case.device).manual_seed(seed)
    shape = (case.num_blocks, case.block_size, case.entry)
    if case.is_fp8:
        cache = reads.random_fp8_codes(shape, fp8.FORMATS[case.fp8_format], gen, case.device)
        scale = (0.01 + 0.1 * torch.rand(1, generator=gen, device=case.device)).float()
    else:
        cache = reads.random_values(shape, case.torch_dtype, gen, case.device)
        scale = torch.ones(1, dtype=torch.float32, device=case.device)
    batch = reads.make_batch(case)
    dst = reads.dense(case.num_tokens, (case.entry,), case.torch_dtype, case.device)
    return GatherWorkload(case, batch.source_slots, cache, dst, batch, scale)


def make_workloads(case: Case, seed: int, sets: int = 1) -> list[GatherWorkload]:
    return [make(case, seed)]


def reference_write(w: GatherWorkload) -> None:
    w.dst[: w.case.num_tokens].copy_(gathered(w))
