"""Slot mappings: where each token of a call is written (slot = block * block_size + offset; negative = padding).

Patterns (the `slots` parameter of every op):
- random: unique random slots (vLLM's benchmark);
- prefill: sequences of PREFILL_SEQ_LEN tokens, each filling consecutive slots of its own random blocks;
- decode: one token per sequence, at a random offset of a distinct random block;
- padded: random, with the last quarter of the tokens padding (slot -1), as when a batch is padded up to a captured
  CUDA-graph size: writers must skip them.
A cold-L2 case rotates through several slot mappings; `slot_sets` draws them from one stream, so they are disjoint
and a replay that runs every set leaves each set's tokens in place.
"""

from __future__ import annotations

import torch

from kvbench.errors import CaseError

PREFILL_SEQ_LEN = 512  # a multiple of every block size: sequences need no more blocks than num_slots allows
PADDED_EVERY = 4  # padded: the last num_tokens // 4 tokens are padding


def valid_count(pattern: str, num_tokens: int) -> int:
    return num_tokens - num_tokens // PADDED_EVERY if pattern == "padded" else num_tokens


def max_sets(pattern: str, num_tokens: int, num_blocks: int, block_size: int) -> int:
    """How many disjoint slot mappings of `num_tokens` tokens fit in the cache."""
    return (num_blocks if pattern == "decode" else num_blocks * block_size) // num_tokens


def slot_sets(pattern: str, num_tokens: int, num_blocks: int, block_size: int, seed: int, sets: int = 1,
              device: str = "cpu") -> list[torch.Tensor]:
    """`sets` disjoint int64 slot mappings of `num_tokens` tokens in `pattern`, drawn from `seed`."""
    if sets > max_sets(pattern, num_tokens, num_blocks, block_size):
        raise CaseError(f"{sets} disjoint sets of {num_tokens} tokens (slots {pattern!r}) do not fit in "
                        f"{num_blocks} blocks of {block_size}; use --num-blocks {num_blocks * sets} or more")
    gen = torch.Generator().manual_seed(seed)
    n, bs = num_tokens * sets, block_size
    if pattern in ("random", "padded"):
        stream = torch.randperm(num_blocks * bs, generator=gen)[:n]
    elif pattern == "decode":
        blocks = torch.randperm(num_blocks, generator=gen)[:n]
        stream = blocks * bs + torch.randint(0, bs, (n,), generator=gen)
    else:  # prefill: token i of the stream sits at offset i % bs of its sequence's blocks
        blocks = torch.randperm(num_blocks, generator=gen)[: -(-n // bs)]
        stream = (blocks[:, None] * bs + torch.arange(bs)).flatten()[:n]
    out = []
    for chunk in stream.split(num_tokens):
        chunk = chunk.clone()
        if pattern == "padded":
            chunk[valid_count(pattern, num_tokens):] = -1
        out.append(chunk.to(device))
    return out


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
