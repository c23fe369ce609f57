"""vLLM's `convert_fp8(dst_cache, src_cache, scale, kv_cache_dtype)`: a whole KV cache converted between fp8 codes
and 16/32-bit values (vLLM's tests read fp8 caches back with it; its ROCm helpers and torch utilities call it).

The op converts every element of src_cache into dst_cache (same shape, contiguous; vLLM launches one CUDA block per
src_cache.size(0)):
- dequantize (uint8 codes -> half / bfloat16 / float): dst = round(float(code) * scale) to the destination dtype
  (round to nearest even; a float32 product, as vLLM's fp8 -> half -> float conversion and multiply);
- quantize (half / bfloat16 / float -> uint8 codes): saturate(float(x) / scale) rounded to nearest (IEEE division),
  as every vLLM cache write (kvbench.ops.fp8).
`kv_cache_dtype` selects the format: fp8 / fp8_e4m3 (e4m3) or fp8_e5m2; `scale` is a host float. The cache is a
paged flash-layout cache [num_tokens / block_size, block_size, num_heads, head_size] (default 8 x 128, the KV heads
of Llama-3.1-8B and the other 8-KV-head presets); num_tokens must be a multiple of block_size (whole blocks are
converted), num_blocks is not used. Read from vLLM's csrc/cache_kernels.cu (convert_fp8_kernel) and its fp8
conversions (quantization/.../nvidia/quant_utils.cuh, scaled_vec_conversion).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from kvbench.ops import fp8, reads
from kvbench.ops.base import Output, WriteCase, Workload, choose, positive

KV_CACHE_DTYPES = {"fp8": "e4m3", "fp8_e4m3": "e4m3", "fp8_e5m2": "e5m2"}
DIRECTIONS = ("dequantize", "quantize")


@dataclasses.dataclass(frozen=True)
class Case(WriteCase):
    """`num_tokens` cache slots (num_tokens / block_size blocks) of num_heads x head_size converted."""

    OP: ClassVar[str] = "convert-fp8"
    SLOT_PATTERNS: ClassVar[tuple[str, ...]] = ("random",)
    BLOCK_SIZES: ClassVar[tuple[int, ...]] = (16, 32, 64)
    FP8_FORMATS: ClassVar[dict[str, str | None]] = KV_CACHE_DTYPES
    KV_CACHE_DTYPES: ClassVar[tuple[str, ...]] = tuple(KV_CACHE_DTYPES)

    kv_cache_dtype: str = "fp8"
    num_heads: int = 8
    head_size: int = 128
    direction: str = "dequantize"

    def __post_init__(self):
        super().__post_init__()
        positive(self, "num_heads", "head_size")
        choose("direction", self.direction, DIRECTIONS)
        self.require_warm()
        self.require_whole_blocks("converts")

    @property
    def blocks(self) -> int:
        return self.num_tokens // self.block_size

    @property
    def elements(self) -> int:
        return self.num_tokens * self.num_heads * self.head_size

    @property
    def src_element_size(self) -> int:
        return 1 if self.direction == "dequantize" else self.input_element_size

    @property
    def dst_element_size(self) -> int:
        return self.input_element_size if self.direction == "dequantize" else 1

    @property
    def cache_bytes(self) -> int:
        return (self.blocks + 1) * self.block_size * self.num_heads * self.head_size * self.dst_element_size

    @property
    def input_bytes(self) -> int:
        return self.elements * self.src_element_size

    @property
    def bytes_moved(self) -> int:
        """Every element read once and written once."""
        return self.elements * (self.src_element_size + self.dst_element_size)


@dataclasses.dataclass
class ConvertWorkload(Workload):
    INPUT_NAMES: ClassVar[tuple[str, ...]] = ("src_cache", "scale")

    src: torch.Tensor  # [blocks, block_size, heads, head_size]: uint8 codes (dequantize) or values (quantize)
    dst_all: torch.Tensor  # [blocks + 1, ...]: the destination and one block after it (must stay unwritten)
    scale: torch.Tensor  # float32 0-dim (the op takes it as a host float: `scale_value`)

    @property
    def dst(self) -> torch.Tensor:
        """What the op is given to write: the first `blocks` blocks of dst_all (contiguous)."""
        return self.dst_all[: self.case.blocks]

    @property
    def scale_value(self) -> float:
        return float(self.scale)

    def inputs(self) -> list[torch.Tensor]:
        return [self.src, self.scale]

    def outputs(self) -> list[torch.Tensor]:
        return [self.dst_all]

    def expected(self) -> list[Output]:
        c = self.case
        tokens = self.dst_all.view(-1, c.num_heads, c.head_size)
        want = converted(self.src, self.scale, c).view(-1, c.num_heads, c.head_size)
        o = reads.dense_output("converted cache", tokens, want, ("head", "dim"))
        if c.direction == "quantize":
            o.fp8, o.scale, o.source = c.fp8_format, self.scale, self.src.view(-1, c.num_heads, c.head_size)
        return [o]


def converted(src: torch.Tensor, scale: torch.Tensor, case: Case) -> torch.Tensor:
    """What the op stores for `src`: codes -> float32 value x scale rounded to the dtype, or the saturated,
    round-to-nearest fp8 codes of x / scale."""
    if case.direction == "dequantize":
        return (src.view(fp8.FORMATS[case.fp8_format]).float() * scale.float()).to(case.torch_dtype)
    return fp8.quantize(src, scale, case.fp8_format)


def make(case: Case, seed: int) -> ConvertWorkload:
    gen = torch.Generator(device=case.device).manual_seed(seed)
    shape = (case.blocks, case.block_size, case.num_heads, case.head_size)
    if case.direction == "dequantize":
        src = reads.random_fp8_codes(shape, fp8.FORMATS[case.fp8_format], gen, case.device)
        # a per-tensor scale as vLLM's writes keep one (max|x| / 64 of some key): any positive float32
        scale = (0.01 + 0.1 * torch.rand((), generator=gen, device=case.device)).float()
        dst = torch.empty(case.blocks + 1, *shape[1:], dtype=case.torch_dtype, device=case.device)
    else:
        src = reads.random_values(shape, case.torch_dtype, gen, case.device)
        scale = fp8.scales(src.view(-1, case.num_heads, case.head_size))
        dst = torch.empty(case.blocks + 1, *shape[1:], dtype=torch.uint8, device=case.device)
    slots = torch.arange(case.num_tokens, device=case.device)  # token t of the cache is row t of the output
    return ConvertWorkload(case, slots, src, dst, scale)


def make_workloads(case: Case, seed: int, sets: int = 1) -> list[ConvertWorkload]:
    return [make(case, seed)]


def reference_write(w: ConvertWorkload) -> None:
    """The whole conversion in torch ops (capturable in a CUDA graph)."""
    w.dst.copy_(converted(w.src, w.scale, w.case))
