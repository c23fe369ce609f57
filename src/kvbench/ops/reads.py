"""What the read side of the KV cache shares: a case that reads the cache back, the batch it reads (sequences and
their block table), dense outputs, and random cache contents.

vLLM's gathers copy the tokens of a batch of sequences out of the paged cache into a dense [tokens, ...] workspace
(chunked prefill's context, context parallelism, MLA's and the indexer's prefill). A sequence owns blocks of the
cache listed in its row of the block table; the gather reads its tokens start .. start + length - 1 (`seq_starts`:
where a context chunk starts in the sequence) and writes them after those of the sequences before it
(`cu_seq_lens`). Batches (the `batch` field of every read case):
- mixed (default): sequences of mixed lengths (up to twice the mean, the mean num_tokens / 8 up to 2048), each
  on blocks taken from a shuffled pool, a chunk starting up to two blocks into its sequence (at a multiple of the
  op's start granularity: a whole block where the op reads starts per block);
- uniform: sequences of 512 tokens from their start (vLLM's tests: equal lengths, shuffled blocks);
- contiguous: one sequence on blocks 0, 1, 2, ... in order (the easiest case for a kernel).
The cache a gather reads is an input: filled with random values (valid fp8 codes for fp8 caches, never NaN),
fingerprinted and checked unchanged, never poisoned; the destination is poisoned and has DENSE_SLACK rows more
than the op writes, which must stay poison.
"""

from __future__ import annotations

import dataclasses
import random
from typing import ClassVar

import torch

from kvbench.errors import CaseError
from kvbench.ops.base import Output, Workload, WriteCase, choose, positive

BATCHES = ("mixed", "uniform", "contiguous")
MIXED_SEQS = 8  # mixed: the mean length is num_tokens / MIXED_SEQS ...
MIXED_MAX_MEAN = 2048  # ... at most this
UNIFORM_LEN = 512  # uniform: tokens per sequence (vLLM's tests' max_seq_len)
DENSE_SLACK = 16  # rows of a dense destination after the last one written (must stay poison)


@dataclasses.dataclass(frozen=True)
class ReadCase(WriteCase):
    """A case that reads `num_tokens` tokens of a batch of sequences back from a paged cache of num_blocks x
    block_size slots. Slot patterns are the writes' (only `random`, unused here); the L2 is warm (vLLM's method)."""

    SLOT_PATTERNS: ClassVar[tuple[str, ...]] = ("random",)
    BLOCK_SIZES: ClassVar[tuple[int, ...]] = (16, 64)
    START_ALIGN: ClassVar[int | None] = 1  # tokens; 0: per block (block_size); None: the op takes no starts

    num_blocks: int = 2048
    block_size: int = 64
    batch: str = "mixed"

    def __post_init__(self):
        super().__post_init__()
        choose("batch", self.batch, BATCHES)
        self.require_warm("; it reads its batch from a cache of its own")
        need = blocks_of(self.plan(), self.block_size)
        if need > self.num_blocks:
            raise CaseError(f"num_tokens {self.num_tokens} in batch {self.batch!r} take {need} blocks of "
                            f"{self.block_size}; the cache has {self.num_blocks}: use --num-blocks {need} or more")

    @property
    def start_align(self) -> int | None:
        return self.block_size if self.START_ALIGN == 0 else self.START_ALIGN

    def plan(self) -> list[tuple[int, int]]:
        """(start, length) of each sequence of the batch (from the case's seed: the same batch every time)."""
        return seq_plan(self.batch, self.num_tokens, self.block_size, self.start_align, self.seed)


@dataclasses.dataclass(frozen=True)
class MLARowsCase(ReadCase):
    """A read of MLA latent rows: kv_lora_rank + pe_dim values a token (DeepSeek's 512 + 64)."""

    kv_lora_rank: int = 512
    pe_dim: int = 64

    def __post_init__(self):
        super().__post_init__()
        positive(self, "kv_lora_rank", "pe_dim")

    @property
    def entry(self) -> int:
        return self.kv_lora_rank + self.pe_dim


def seq_plan(batch: str, num_tokens: int, block_size: int, align: int | None, seed: int) -> list[tuple[int, int]]:
    """(start, length) per sequence, lengths summing to num_tokens; starts multiples of `align` (None: 0)."""
    if batch == "contiguous":
        return [(0, num_tokens)]
    if batch == "uniform":
        lengths = [UNIFORM_LEN] * (num_tokens // UNIFORM_LEN) + ([num_tokens % UNIFORM_LEN] if num_tokens %
                                                                   UNIFORM_LEN else [])
        return [(0, n) for n in lengths]
    rng = random.Random(seed)
    mean = max(1, min(MIXED_MAX_MEAN, num_tokens // MIXED_SEQS))
    out, left = [], num_tokens
    while left:
        length = rng.randint(1, min(left, 2 * mean))
        start = 0 if align is None else rng.randrange(0, 2 * block_size) // align * align
        out.append((start, length))
        left -= length
    return out


def blocks_of(plan: list[tuple[int, int]], block_size: int) -> int:
    return sum(-(-(start + length) // block_size) for start, length in plan)


@dataclasses.dataclass
class Batch:
    """The tensors describing what a gather reads (int32 on the case's device, as vLLM's ops take them)."""

    block_table: torch.Tensor  # [sequences, max blocks]: each sequence's blocks (unused entries 0)
    cu_seq_lens: torch.Tensor  # [sequences + 1]: where each sequence's tokens start in the destination
    seq_lens: torch.Tensor  # [sequences]
    seq_starts: torch.Tensor  # [sequences]: the first token read in each sequence
    token_to_seq: torch.Tensor  # [tokens]: each destination row's sequence
    source_slots: torch.Tensor  # int64 [tokens]: the cache slot each destination row is read from (for messages)

    @property
    def num_seqs(self) -> int:
        return self.seq_lens.shape[0]


@dataclasses.dataclass
class SeqGatherWorkload(Workload):
    """A gather of whole cache rows by sequences (block table, cu_seq_lens, seq_starts) into a dense `dst`; each
    op names its inputs (INPUT_NAMES, in `inputs()`' order) and gives `expected()`."""

    INPUT_NAMES: ClassVar[tuple[str, ...]] = ("src_cache", "block_table", "cu_seq_lens", "seq_starts")

    src_cache: torch.Tensor  # [num_blocks, block_size, entry]
    dst: torch.Tensor  # [num_tokens + DENSE_SLACK, ...]
    batch: Batch

    def inputs(self) -> list[torch.Tensor]:
        b = self.batch
        return [self.src_cache, b.block_table, b.cu_seq_lens, b.seq_starts]

    def outputs(self) -> list[torch.Tensor]:
        return [self.dst]


def make_batch(case: ReadCase) -> Batch:
    """The case's batch: its sequences on blocks from a shuffled pool (contiguous: blocks in order)."""
    plan = case.plan()
    bs = case.block_size
    gen = torch.Generator().manual_seed(case.seed)
    pool = torch.arange(case.num_blocks) if case.batch == "contiguous" else torch.randperm(case.num_blocks,
                                                                                          generator=gen)
    counts = [-(-(start + length) // bs) for start, length in plan]
    table = torch.zeros(len(plan), max(counts), dtype=torch.int64)
    slots, taken = [], 0
    for i, ((start, length), count) in enumerate(zip(plan, counts)):
        blocks = pool[taken : taken + count]
        taken += count
        table[i, :count] = blocks
        position = start + torch.arange(length)
        slots.append(blocks[position // bs] * bs + position % bs)
    lengths = torch.tensor([length for _, length in plan])
    cu = torch.zeros(len(plan) + 1, dtype=torch.int64)
    cu[1:] = torch.cumsum(lengths, 0)
    dev = case.device
    return Batch(table.to(torch.int32).to(dev), cu.to(torch.int32).to(dev), lengths.to(torch.int32).to(dev),
                 torch.tensor([start for start, _ in plan], dtype=torch.int32).to(dev),
                 torch.repeat_interleave(torch.arange(len(plan), dtype=torch.int32), lengths).to(dev),
                 torch.cat(slots).to(dev))


def source_slots(block_table: torch.Tensor, cu_seq_lens: torch.Tensor, seq_starts: torch.Tensor | None,
                 block_size: int, num_tokens: int, token_to_seq: torch.Tensor | None = None) -> torch.Tensor:
    """int64 [num_tokens]: the cache slot each destination row reads, from an op's own inputs (documented
    semantics: row t belongs to the sequence b with cu_seq_lens[b] <= t < cu_seq_lens[b + 1] (or token_to_seq[t]);
    it is token t - cu_seq_lens[b] + seq_starts[b] of b, in block block_table[b, position / block_size] at offset
    position % block_size). Plain torch ops, no host synchronisation (capturable in a CUDA graph)."""
    t = torch.arange(num_tokens, device=cu_seq_lens.device)
    cu = cu_seq_lens.long()
    if token_to_seq is None:
        b = torch.searchsorted(cu[1:], t, right=True)
    else:
        b = token_to_seq[:num_tokens].long()
    position = t - cu[b]
    if seq_starts is not None:
        position = position + seq_starts.long()[b]
    block = block_table.long()[b, torch.div(position, block_size, rounding_mode="floor")]
    return block * block_size + position % block_size


def dense(rows: int, row_shape: tuple[int, ...], dtype: torch.dtype, device: str) -> torch.Tensor:
    """A dense destination of `rows` rows and DENSE_SLACK more (which must stay unwritten)."""
    return torch.empty(rows + DENSE_SLACK, *row_shape, dtype=dtype, device=device)


def dense_output(name: str, tensor: torch.Tensor, expected: torch.Tensor, row_dims: tuple[str, ...],
                 first_row: int = 0) -> Output:
    """An Output for rows first_row .. first_row + len(expected) - 1 of a dense tensor [rows, *row] (the whole
    tensor, slack rows included, is checked for stray writes)."""
    rows = tensor.unsqueeze(1)
    where = torch.arange(first_row, first_row + expected.shape[0], device=tensor.device)
    return Output(name, tensor, rows, expected, row_dims, slots=where)


def random_values(shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator, device: str) -> torch.Tensor:
    """N(0, 1) values of a 16/32-bit dtype (vLLM's tests fill caches with torch.randn)."""
    return torch.randn(shape, generator=gen, device=device, dtype=dtype)


def random_fp8_codes(shape: tuple[int, ...], fmt: torch.dtype, gen: torch.Generator, device: str,
                     spread: float = 8.0) -> torch.Tensor:
    """uint8 codes of valid fp8 values (N(0, spread) cast to the format, saturated: never NaN or inf)."""
    limit = torch.finfo(fmt).max
    x = torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * spread
    return x.clamp(-limit, limit).to(fmt).view(torch.uint8)
