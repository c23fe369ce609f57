"""Slot mappings: where each token of a call is written (slot = block * block_size + offset; negative = padding).

Patterns (the `slots` parameter of every op):
- random: unique random slots (vLLM's benchmark);
- padded: random, with the last quarter of the tokens padding (slot -1): writers must skip them.
Serving batches, made from a block table as vLLM's scheduler makes them: each sequence owns blocks taken from a
shuffled pool of free blocks, and its new tokens go to the slots after the tokens it already has cached (its
context), so a sequence's tokens fill consecutive offsets and cross into its next block at a block boundary:
- decode: one token per running sequence, at its next slot: a distinct block per token, at the offset its context
  length leaves (context lengths uniform, so the offset is uniform in the block);
- prefill: chunks of at most PREFILL_CHUNK tokens (chunked prefill), each continuing a sequence whose context ends
  at a random offset of its first block, through consecutive blocks of its own;
- mixed: chunked prefill plus decodes in one batch, as vLLM schedules them (the running requests' decode tokens
  first, up to MIXED_DECODES, then prefill chunks filling the token budget);
- decode-padded: a decode batch padded with -1 slots up to the CUDA-graph size vLLM captured for it
  (CAPTURE_SIZES): `num_tokens` is the graph's size, the batch the size half-way from the next smaller graph (16 ->
  12 sequences and 4 padding rows); above the largest captured size vLLM runs eagerly, unpadded.
A cold-L2 case rotates through several slot mappings; `slot_sets` draws them from one stream of blocks, so they
are disjoint and a replay that runs every set leaves each set's tokens in place.
"""

from __future__ import annotations

import torch

from kvbench.errors import CaseError

PATTERNS = ("random", "prefill", "decode", "padded", "mixed", "decode-padded")
PREFILL_SEQ_LEN = 512  # prefill chunk length (a multiple of every block size)
PREFILL_CHUNK = PREFILL_SEQ_LEN
PADDED_EVERY = 4  # padded: the last num_tokens // 4 tokens are padding
MIXED_DECODES = 256  # mixed: at most this many decode tokens (vLLM's default max_num_seqs), at most half the batch
# vLLM's default CUDA-graph capture sizes: 1, 2, 4, then every 8 up to 256, then every 16 up to 512
# (cudagraph_capture_sizes when max_num_seqs is 256; see the module docstring).
MAX_CAPTURE_SIZE = 512
CAPTURE_SIZES = (1, 2, 4) + tuple(range(8, 256, 8)) + tuple(range(256, MAX_CAPTURE_SIZE + 1, 16))


def capture_padding(num_tokens: int) -> int:
    """decode-padded: how many of `num_tokens` rows are padding (the batch is half-way from the next smaller
    captured size); 0 above the largest captured size."""
    if num_tokens > MAX_CAPTURE_SIZE or num_tokens not in CAPTURE_SIZES:
        return 0
    smaller = max((s for s in CAPTURE_SIZES if s < num_tokens), default=0)
    return (num_tokens - smaller) // 2


def valid_count(pattern: str, num_tokens: int) -> int:
    if pattern == "padded":
        return num_tokens - num_tokens // PADDED_EVERY
    if pattern == "decode-padded":
        return num_tokens - capture_padding(num_tokens)
    return num_tokens


def check(pattern: str, num_tokens: int) -> None:
    """decode-padded takes a captured size (or one above the largest): a one-line error otherwise."""
    if pattern == "decode-padded" and num_tokens <= MAX_CAPTURE_SIZE and num_tokens not in CAPTURE_SIZES:
        near = [s for s in CAPTURE_SIZES if abs(s - num_tokens) <= 16]
        raise CaseError(f"num_tokens {num_tokens} is not one of vLLM's CUDA-graph capture sizes, which slots "
                        f"'decode-padded' needs; nearby: {', '.join(map(str, near))} (or above {MAX_CAPTURE_SIZE})")


def _sequences(pattern: str, num_tokens: int) -> list[int]:
    """New tokens of each sequence of the batch, in batch order (decodes first)."""
    decodes = {"decode": num_tokens, "decode-padded": valid_count(pattern, num_tokens),
               "mixed": min(MIXED_DECODES, num_tokens // 2)}.get(pattern, 0)
    rest = num_tokens - decodes if pattern in ("prefill", "mixed") else 0
    return [1] * decodes + [min(PREFILL_CHUNK, rest - start) for start in range(0, rest, PREFILL_CHUNK)]


def blocks_needed(pattern: str, num_tokens: int, block_size: int) -> int:
    """At most how many blocks one slot mapping of the pattern takes (a chunk may start mid-block: one more)."""
    if pattern in ("random", "padded"):
        return -(-num_tokens // block_size)
    return sum(-(-(new + block_size - 1) // block_size) for new in _sequences(pattern, num_tokens))


def max_sets(pattern: str, num_tokens: int, num_blocks: int, block_size: int) -> int:
    """How many disjoint slot mappings of `num_tokens` tokens fit in the cache."""
    if pattern in ("random", "padded"):
        return num_blocks * block_size // num_tokens
    return num_blocks // blocks_needed(pattern, num_tokens, block_size)


def _block_table_slots(pattern: str, num_tokens: int, block_size: int, pool: torch.Tensor,
                       gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's slots from the pool of free blocks (taken from its front), and what is left of the pool. Each
    sequence's context ends at a random offset of its first block; its new tokens follow through blocks of its own."""
    news = torch.tensor(_sequences(pattern, num_tokens), dtype=torch.int64)
    bs = block_size
    starts = torch.randint(0, bs, (news.numel(),), generator=gen)  # where each sequence's context ends in its block
    counts = (starts + news + bs - 1) // bs  # blocks each sequence takes from the pool
    first_block = torch.cumsum(counts, 0) - counts
    seq = torch.repeat_interleave(torch.arange(news.numel()), news)  # each new token's sequence
    position = starts[seq] + torch.arange(seq.numel()) - (torch.cumsum(news, 0) - news)[seq]
    slots = pool[first_block[seq] + position // bs] * bs + position % bs
    padding = num_tokens - slots.numel()
    rest = pool[int(counts.sum()):]
    return torch.cat([slots, torch.full((padding,), -1, dtype=torch.int64)]), rest


def slot_sets(pattern: str, num_tokens: int, num_blocks: int, block_size: int, seed: int, sets: int = 1,
              device: str = "cpu") -> list[torch.Tensor]:
    """`sets` disjoint int64 slot mappings of `num_tokens` tokens in `pattern`, drawn from `seed`."""
    if sets > max_sets(pattern, num_tokens, num_blocks, block_size):
        raise CaseError(f"{sets} disjoint sets of {num_tokens} tokens (slots {pattern!r}) do not fit in "
                        f"{num_blocks} blocks of {block_size}; use --num-blocks "
                        f"{sets * blocks_needed(pattern, num_tokens, block_size)} or more")
    gen = torch.Generator().manual_seed(seed)
    n, bs = num_tokens * sets, block_size
    if pattern in ("random", "padded"):
        stream = torch.randperm(num_blocks * bs, generator=gen)[:n]
        chunks = [c.clone() for c in stream.split(num_tokens)]
        if pattern == "padded":
            for chunk in chunks:
                chunk[valid_count(pattern, num_tokens):] = -1
    elif pattern == "decode":  # (drawn as before 2026-12: the same slots for the same seed)
        blocks = torch.randperm(num_blocks, generator=gen)[:n]
        stream = blocks * bs + torch.randint(0, bs, (n,), generator=gen)
        chunks = [c.clone() for c in stream.split(num_tokens)]
    else:
        pool = torch.randperm(num_blocks, generator=gen)
        chunks = []
        for _ in range(sets):
            chunk, pool = _block_table_slots(pattern, num_tokens, bs, pool, gen)
            chunks.append(chunk)
    return [chunk.to(device) for chunk in chunks]


def valid(slot_mapping: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(slots, token indices) of the tokens that are written."""
    keep = slot_mapping >= 0
    return slot_mapping[keep], torch.arange(slot_mapping.shape[0], device=slot_mapping.device)[keep]


def graph_safe(slot_mapping: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(source token, destination slot, any valid) for each token, for references that must be capturable in a CUDA
    graph (no host sync to drop padding): a padding token repeats the first valid token's write (same slot, same
    data); when every token is padding, `any valid` is False and the caller rewrites slot 0 with its own contents."""
    n = slot_mapping.shape[0]
    valid = slot_mapping >= 0
    any_valid = valid.any()
    first = torch.argmax(valid.to(torch.int8))
    source = torch.where(valid, torch.arange(n, device=slot_mapping.device), first)
    return source, torch.where(any_valid, slot_mapping[source], 0), any_valid
