"""vLLM's block copies: `swap_blocks(src, dst, block_size_in_bytes, block_mapping)` and `swap_blocks_batch(src_ptrs,
dst_ptrs, sizes, is_src_access_order_any)`, which move KV-cache blocks between the GPU's cache and host memory
(vLLM's KV offloading: v1/kv_offload/cpu/gpu_worker.py stores blocks to pinned CPU memory and loads them back)
or within one device.

- swap_blocks copies, for each row (s, d) of block_mapping (int64 [n, 2], on the CPU), the block_size_in_bytes bytes
  of block s of src to block d of dst (each tensor a sequence of contiguous blocks); one call per tensor (layer).
  GPU -> GPU, GPU -> CPU and CPU -> GPU (CPU memory pinned); never CPU -> CPU.
- swap_blocks_batch copies sizes[i] bytes from address src_ptrs[i] to dst_ptrs[i] for every i (three int64 CPU
  tensors) in one driver call (cuMemcpyBatchAsync where CUDA >= 12.8); is_src_access_order_any lets the copy engine
  read the source out of stream order (vLLM sets it for CPU -> GPU loads only).
A case copies num_tokens / block_size blocks of each of num_layers layers. A layer's cache is [num_blocks,
block_size, num_heads, 2 x head_size] (K and V of a slot and head side by side: vLLM's default layout from 0.26,
one contiguous page per block; default 8 KV heads x 128, Llama-3.1-8B and the other 8-KV-head presets); the
source blocks and the destination blocks are distinct random blocks (a request's blocks, shuffled in each pool).
`transfer` says where the source and the destination live: gpu-gpu, gpu-cpu (an offloading store), cpu-gpu (a
load); on a CPU-only machine both sides are CPU memory (the torch reference only). Bytes moved: each page read once
and written once; gpu-cpu and cpu-gpu are bounded by the host link, not by the device's copy rate the "x ideal"
column uses. Read from vLLM's csrc/cache_kernels.cu (swap_blocks, swap_blocks_batch), _custom_ops.py and tests
(tests/kernels/attention/test_cache.py, test_swap_blocks).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from kvbench.ops import reads
from kvbench.ops.base import Output, WriteCase, Workload, choose, positive

TRANSFERS = ("gpu-cpu", "cpu-gpu", "gpu-gpu")
KV_CACHE_DTYPES = {"auto": None, "fp8": "e4m3"}  # fp8: uint8 pages (copied as bytes)


@dataclasses.dataclass(frozen=True)
class Case(WriteCase):
    """num_tokens / block_size blocks of each of num_layers layers copied between two caches of num_blocks."""

    OP: ClassVar[str] = "swap-blocks"
    SLOT_PATTERNS: ClassVar[tuple[str, ...]] = ("random",)
    BLOCK_SIZES: ClassVar[tuple[int, ...]] = (16, 32, 64)
    KV_CACHE_DTYPES: ClassVar[tuple[str, ...]] = tuple(KV_CACHE_DTYPES)

    num_blocks: int = 2048
    num_heads: int = 8
    head_size: int = 128
    num_layers: int = 2
    transfer: str = "gpu-cpu"

    def __post_init__(self):
        super().__post_init__()
        positive(self, "num_heads", "head_size", "num_layers")
        choose("transfer", self.transfer, TRANSFERS)
        self.require_warm()
        self.require_whole_blocks("copies")

    @property
    def copies(self) -> int:
        """Blocks copied per layer."""
        return self.num_tokens // self.block_size

    @property
    def element_size(self) -> int:
        return 1 if self.kv_cache_dtype == "fp8" else self.input_element_size

    @property
    def cache_dtype(self) -> torch.dtype:
        return torch.uint8 if self.kv_cache_dtype == "fp8" else self.torch_dtype

    @property
    def page_elements(self) -> int:
        return self.block_size * self.num_heads * 2 * self.head_size

    @property
    def page_bytes(self) -> int:
        return self.page_elements * self.element_size

    @property
    def cache_bytes(self) -> int:
        return 2 * self.num_layers * self.num_blocks * self.page_bytes

    @property
    def input_bytes(self) -> int:
        return 16 * self.copies

    @property
    def bytes_moved(self) -> int:
        """Every copied page read once and written once, in every layer."""
        return 2 * self.num_layers * self.copies * self.page_bytes

    def memory(self, side: str) -> str:
        """The torch device of the source ("src") or the destination ("dst") for this transfer."""
        if self.device == "cpu":
            return "cpu"
        where = self.transfer.split("-")[0 if side == "src" else 1]
        return "cuda" if where == "gpu" else "cpu"


@dataclasses.dataclass
class SwapWorkload(Workload):
    INPUT_NAMES: ClassVar[tuple[str, ...]] = ("src", "block_mapping")

    src: torch.Tensor  # [num_layers, num_blocks, page elements]: one buffer, a layer's cache a slab of it
    dst: torch.Tensor  # the same shape, on the destination's memory
    block_mapping: torch.Tensor  # int64 [copies, 2] on the CPU: (source block, destination block)

    def layer(self, tensor: torch.Tensor, i: int) -> torch.Tensor:
        """Layer i's cache [num_blocks, block_size, heads, 2 x head_size] (a view of the buffer)."""
        c = self.case
        return tensor[i].view(c.num_blocks, c.block_size, c.num_heads, 2 * c.head_size)

    def inputs(self) -> list[torch.Tensor]:
        return [self.src, self.block_mapping]

    def outputs(self) -> list[torch.Tensor]:
        return [self.dst]

    def expected(self) -> list[Output]:
        c = self.case
        src_blocks, dst_blocks = (self.block_mapping[:, i].to(self.src.device) for i in (0, 1))
        layers = torch.arange(c.num_layers, device=self.src.device)[:, None] * c.num_blocks
        pages = self.src.view(-1, c.page_elements)[(layers + src_blocks).flatten()]
        where = (layers + dst_blocks.to(layers.device)).flatten().to(self.dst.device)
        return [Output("destination pages", self.dst, self.dst.view(-1, 1, c.page_elements),
                       pages.to(self.dst.device), ("element",), slots=where)]


def make(case: Case, seed: int) -> SwapWorkload:
    """Random pages drawn on the case's device (a host cache is filled from the GPU: drawing gigabytes on the CPU
    took seconds a case), distinct random source and destination blocks (the case's seed), pinned host memory on a
    GPU machine."""
    src_mem, dst_mem = case.memory("src"), case.memory("dst")
    shape = (case.num_layers, case.num_blocks, case.page_elements)
    gen = torch.Generator(device=case.device).manual_seed(seed)
    pinned = case.device == "cuda"
    if case.kv_cache_dtype == "fp8":
        src = reads.random_fp8_codes(shape, torch.float8_e4m3fn, gen, case.device)
    else:
        src = reads.random_values(shape, case.torch_dtype, gen, case.device)
    if src_mem != case.device:  # a pinned host page, filled by one copy
        src = torch.empty(shape, dtype=src.dtype, device=src_mem, pin_memory=pinned).copy_(src)
    dst = torch.empty(shape, dtype=case.cache_dtype, device=dst_mem, pin_memory=pinned and dst_mem == "cpu")
    order = torch.Generator().manual_seed(case.seed)
    mapping = torch.stack([torch.randperm(case.num_blocks, generator=order)[: case.copies],
                           torch.randperm(case.num_blocks, generator=order)[: case.copies]], dim=1)
    offsets = torch.arange(case.block_size)
    slots = (mapping[:, 0:1] * case.block_size + offsets).flatten().to(case.device)  # the source slots copied
    return SwapWorkload(case, slots, src, dst, mapping.contiguous())


def make_workloads(case: Case, seed: int, sets: int = 1) -> list[SwapWorkload]:
    return [make(case, seed)]


def reference_write(w: SwapWorkload) -> None:
    """torch's own copies, layer by layer: on one device an index_select into an index_copy_; across devices one
    copy_ per block (non-blocking: a pinned page is copied by the copy engine)."""
    c = w.case
    src_blocks, dst_blocks = w.block_mapping[:, 0], w.block_mapping[:, 1]
    if w.src.device == w.dst.device:
        s, d = src_blocks.to(w.src.device), dst_blocks.to(w.dst.device)
        for i in range(c.num_layers):
            w.dst[i].index_copy_(0, d, w.src[i].index_select(0, s))
        return
    pairs = list(zip(src_blocks.tolist(), dst_blocks.tolist()))
    for i in range(c.num_layers):
        src, dst = w.src[i], w.dst[i]
        for s, d in pairs:
            dst[d].copy_(src[s], non_blocking=True)
