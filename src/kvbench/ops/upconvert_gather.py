"""vLLM's `cp_gather_and_upconvert_fp8_kv_cache(src_cache, dst, block_table, workspace_starts, batch_size,
seq_starts)`: DeepSeek-V3.2's fp8_ds_mla latent cache read back into a bf16 workspace (sparse FlashMLA's prefill,
vllm/v1/attention/backends/mla/flashmla_sparse.py, and MLA's chunked context with an fp8_ds_mla cache).

A cache row is 656 bytes (kvbench.ops.mla, fp8_ds_mla): 512 e4m3 codes in 4 tiles of 128, the 4 tiles' float32
scales (bytes 512-527), 64 bf16 rope values (bytes 528-655). For each sequence b < batch_size and each of its
tokens i < workspace_starts[b + 1] - workspace_starts[b] (workspace_starts: the sequences' first rows in dst, as
cumulative lengths): position p = i + seq_starts[b] (seq_starts optional: where the context chunk starts; any
offset), the row of slot p of the sequence's blocks (block_table[b, p / block_size]) goes to dst[workspace_starts
[b] + i], 576 bf16 values: element j < 512 = round(float(code j) * scale of tile j / 128) to bf16 (nearest even),
elements 512-575 = the rope values copied bit for bit. This is vLLM 0.26's schema and later (0.20-0.25 took
seq_lens and per-sequence workspace starts; 0.30 added an optional host cache, not used here). Read from vLLM's
csrc/cache_kernels.cu (cp_gather_and_upconvert_fp8_kv_cache), _custom_ops.py and its callers.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from kvbench.errors import CaseError
from kvbench.ops import fp8, reads
from kvbench.ops.base import Output

ROW_BYTES, RANK, PE, TILE = 656, 512, 64, 128


@dataclasses.dataclass(frozen=True)
class Case(reads.ReadCase):
    """`num_tokens` fp8_ds_mla rows gathered out of a cache of num_blocks x block_size and upconverted to bf16."""

    OP: ClassVar[str] = "upconvert-gather"
    START_ALIGN: ClassVar[int | None] = 1
    KV_CACHE_DTYPES: ClassVar[tuple[str, ...]] = ("fp8_ds_mla",)

    kv_cache_dtype: str = "fp8_ds_mla"

    def __post_init__(self):
        super().__post_init__()
        if self.dtype != "bfloat16":
            raise CaseError(f"dtype {self.dtype!r} is not supported for op 'upconvert-gather'; vLLM's op writes "
                            f"bf16 (choose: bfloat16)")

    @property
    def cache_bytes(self) -> int:
        return self.num_slots * ROW_BYTES + (self.num_tokens + reads.DENSE_SLACK) * (RANK + PE) * 2

    @property
    def input_bytes(self) -> int:
        return 16 * self.num_tokens

    @property
    def bytes_moved(self) -> int:
        """Each 656-byte row read once, 576 bf16 values written."""
        return self.num_tokens * (ROW_BYTES + (RANK + PE) * 2)


@dataclasses.dataclass
class UpconvertWorkload(reads.SeqGatherWorkload):
    """src_cache uint8 [num_blocks, block_size, 656]; dst bf16 [num_tokens + DENSE_SLACK, 576]."""

    INPUT_NAMES: ClassVar[tuple[str, ...]] = ("src_cache", "block_table", "workspace_starts", "seq_starts")

    def expected(self) -> list[Output]:
        return [reads.dense_output("upconverted rows", self.dst, upconverted(self), ("element",))]


def rows_of(cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes uint8 [..., 512], scales float32 [..., 4], rope bf16 [..., 64]) of 656-byte rows."""
    codes = cache[..., :RANK]
    scales = cache[..., RANK : RANK + 16].contiguous().view(torch.float32)
    rope = cache[..., RANK + 16 :].contiguous().view(torch.bfloat16)
    return codes, scales, rope


def upconverted(w: UpconvertWorkload) -> torch.Tensor:
    """[num_tokens, 576] bf16 from the op's inputs (reads.source_slots: sequences from workspace_starts)."""
    c, b = w.case, w.batch
    where = reads.source_slots(b.block_table, b.cu_seq_lens, b.seq_starts, c.block_size, c.num_tokens)
    codes, scales, rope = rows_of(w.src_cache.view(-1, ROW_BYTES).index_select(0, where))
    values = codes.view(fp8.FORMATS["e4m3"]).float().view(-1, RANK // TILE, TILE) * scales[:, :, None]
    return torch.cat([values.view(-1, RANK).to(torch.bfloat16), rope], dim=1)


def make(case: Case, seed: int) -> UpconvertWorkload:
    """Rows of valid e4m3 codes, positive float32 tile scales (amax / 448 of a tile: not powers of two, so the
    product's rounding is checked), N(0, 1) bf16 rope values."""
    gen = torch.Generator(device=case.device).manual_seed(seed)
    shape = (case.num_blocks, case.block_size)
    cache = torch.empty(*shape, ROW_BYTES, dtype=torch.uint8, device=case.device)
    cache[..., :RANK] = reads.random_fp8_codes((*shape, RANK), fp8.FORMATS["e4m3"], gen, case.device)
    scales = (torch.rand(*shape, 4, generator=gen, device=case.device) * 4 + 0.01) / 448
    cache[..., RANK : RANK + 16] = scales.float().view(torch.uint8).view(*shape, 16)
    rope = reads.random_values((*shape, PE), torch.bfloat16, gen, case.device)
    cache[..., RANK + 16 :] = rope.view(torch.uint8).view(*shape, 2 * PE)
    batch = reads.make_batch(case)
    dst = reads.dense(case.num_tokens, (RANK + PE,), torch.bfloat16, case.device)
    return UpconvertWorkload(case, batch.source_slots, cache, dst, batch)


def make_workloads(case: Case, seed: int, sets: int = 1) -> list[UpconvertWorkload]:
    return [make(case, seed)]


def reference_write(w: UpconvertWorkload) -> None:
    w.dst[: w.case.num_tokens].copy_(upconverted(w))
