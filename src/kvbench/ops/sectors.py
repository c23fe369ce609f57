"""What a kv write costs counted in 32-byte sectors: the ideal for scattered writes ("× sector ideal").

`bytes_moved` counts each element read and written once. A GPU moves memory in 32-byte sectors, and a sector that a
call writes only part of must first be read (read for ownership) to be written back whole. Where a token's pieces
are smaller than a sector and lie apart (the paged value cache holds one token's element of each head and dim
every block_size elements: 2 bytes in each 32-byte sector at bf16 and block 16; the paged key 16-byte chunks), the
bytes understate the traffic. The sector model counts, for the valid tokens of one call:
- reads: each token's key and value rows (contiguous) in whole sectors;
- writes: every sector of the caches the call writes into: 32 bytes where the call writes all of it, 64 (read for
  ownership, then written) where it writes part of it. Tokens of one call that share a sector (slots of one block)
  share its cost.
Exact, from the case's own slots and the layout's strides (meta tensors: nothing is allocated); for large calls
counted on the tokens of a random sample of the cache blocks the call touches (sectors never span blocks) and
scaled by tokens.
The model is a bound to check on a GPU, not a measurement (README, "How to read the numbers").
"""

from __future__ import annotations

import math

import torch

from kvbench.ops import layouts
from kvbench.ops.base import slot_index
from kvbench.ops.slots import slot_sets

SECTOR = 32
SAMPLE_BLOCKS = 256  # blocks whose sectors are counted exactly; the rest scaled from them


def _row_offsets(view: torch.Tensor, first_row_dim: int) -> torch.Tensor:
    """Element offsets of one token's row relative to its first element (every combination of the row dims)."""
    offsets = torch.zeros((), dtype=torch.int64)
    for size, stride in zip(view.shape[first_row_dim:], view.stride()[first_row_dim:]):
        offsets = offsets[..., None] + torch.arange(size, dtype=torch.int64) * stride
    return offsets.flatten()


def write_sector_bytes(view: torch.Tensor, offset_dims: int, slots: torch.Tensor, element_size: int,
                       sample_blocks: int = SAMPLE_BLOCKS, seed: int = 0) -> float:
    """Sector bytes of writing the rows of `slots` (all valid) into `view` ([block, offset dims, row dims], any
    strides): 32 per sector written whole, 64 per sector written in part."""
    per_block = math.prod(view.shape[1:1 + offset_dims])
    blocks = torch.div(slots, per_block, rounding_mode="floor")
    touched = blocks.unique()
    if touched.numel() > sample_blocks:
        pick = torch.randperm(touched.numel(), generator=torch.Generator().manual_seed(seed))[:sample_blocks]
        sample = touched[pick]
    else:
        sample = touched
    chosen = slots[torch.isin(blocks, sample)]
    index = slot_index(view, offset_dims, chosen)
    base = view.storage_offset() + sum(i * s for i, s in zip(index, view.stride()[:1 + offset_dims]))
    elements = (base[:, None] + _row_offsets(view, 1 + offset_dims)[None, :]).flatten()
    _, per_sector = torch.div(elements * element_size, SECTOR, rounding_mode="floor").unique(return_counts=True)
    whole = per_sector * element_size >= SECTOR
    counted = int((whole * SECTOR + ~whole * 2 * SECTOR).sum())
    return counted * slots.numel() / chosen.numel()  # (exact where no two tokens share a sector)


SCATTERED_LAYOUTS = ("paged", "paged-iv")  # kv layouts whose per-token pieces are smaller than a sector


def sector_bytes(case) -> float | None:
    """The sector model's bytes for one call of a kv `case` in a scattered layout; None elsewhere (other layouts
    and ops write whole rows of a head or more: their sectors are their bytes, checked in tests)."""
    return count(case) if case.OP == "kv" and case.layout in SCATTERED_LAYOUTS else None


def count(case) -> float:
    """The sector model's bytes for one call of a kv `case` in any layout but cpu-vec."""
    slots = slot_sets(case.slots, case.num_tokens, case.num_blocks, case.block_size, case.seed)[0]
    slots = slots[slots >= 0]
    row_bytes = case.num_heads * case.head_size * case.input_element_size
    total = 2 * slots.numel() * math.ceil(row_bytes / SECTOR) * SECTOR  # key and value rows read
    caches = layouts.allocate(case, device="meta")
    for which, cache in zip(("key", "value"), caches):
        view, offset_dims = layouts.slot_view(case.layout, which, cache)
        total += write_sector_bytes(view, offset_dims, slots, case.cache_element_size)
    return total
