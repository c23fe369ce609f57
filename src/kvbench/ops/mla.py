"""vLLM's MLA latent-cache write, `concat_and_cache_mla(kv_c, k_pe, kv_cache, slot_mapping, kv_cache_dtype, scale,
skip_scale)`, as DeepSeek-style models call it in every layer.

A call reads kv_c [num_tokens, kv_lora_rank] and k_pe [num_tokens, pe_dim] and writes, for each token with a valid
slot, one row of the cache [num_blocks, block_size, entry]:
- `auto`: entry = kv_lora_rank + pe_dim elements of the input dtype, kv_c then k_pe, copied bit for bit;
- `fp8` / `fp8_e4m3` / `fp8_e5m2`: the same row as fp8 codes (uint8 cache) of saturate(x / scale), both parts, one
  per-tensor float32 scale; with `skip_scale` the scale is not read at all (as dividing by 1);
- `fp8_ds_mla` (DeepSeek V3.2's sparse FlashMLA format; kv_lora_rank 512, pe_dim 64, 16-bit inputs): 656 bytes per
  token: 512 e4m3 codes of kv_c in 4 tiles of 128, each divided by its tile's scale; then the 4 tile scales as
  float32 (bytes 512-527), each the power of two 2**ceil(log2(max(amax / 448, 1e-4))); then k_pe's 64 values
  copied bit for bit (bytes 528-655). The `scale` argument is not used.
Read from vLLM 0.33's kernels and tests (csrc/cache_kernels.cu; tests/kernels/attention/test_cache.py).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from kvbench.errors import CaseError
from kvbench.ops import fp8, slots
from kvbench.ops.base import Output, WriteCase, Workload, choose, positive

KV_CACHE_DTYPES = {"auto": None, "fp8": "e4m3", "fp8_e4m3": "e4m3", "fp8_e5m2": "e5m2", "fp8_ds_mla": "e4m3"}
DS_MLA_BYTES, DS_TILE, DS_RANK, DS_PE = 656, 128, 512, 64
E4M3_MAX = 448.0


@dataclasses.dataclass(frozen=True)
class Case(WriteCase):
    """An MLA latent-cache write of `num_tokens` rows of kv_lora_rank + pe_dim."""

    OP: ClassVar[str] = "mla"
    BLOCK_SIZES: ClassVar[tuple[int, ...]] = (16, 64)
    FP8_FORMATS: ClassVar[dict[str, str | None]] = KV_CACHE_DTYPES  # the module's mapping (before the next line)
    KV_CACHE_DTYPES: ClassVar[tuple[str, ...]] = tuple(KV_CACHE_DTYPES)

    num_blocks: int = 2048
    block_size: int = 64
    kv_lora_rank: int = 512
    pe_dim: int = 64
    skip_scale: bool = False

    def __post_init__(self):
        super().__post_init__()
        positive(self, "kv_lora_rank", "pe_dim")
        choose("skip_scale", self.skip_scale, (False, True))
        if self.kv_cache_dtype == "fp8_ds_mla":
            if (self.kv_lora_rank, self.pe_dim) != (DS_RANK, DS_PE):
                raise CaseError(f"kv_cache_dtype 'fp8_ds_mla' needs kv_lora_rank {DS_RANK} and pe_dim {DS_PE}; got "
                                f"{self.kv_lora_rank} and {self.pe_dim}")
            if self.dtype == "float":
                raise CaseError("kv_cache_dtype 'fp8_ds_mla' needs a 16-bit input; choose dtype half or bfloat16")

    @property
    def ds_mla(self) -> bool:
        return self.kv_cache_dtype == "fp8_ds_mla"

    @property
    def row_elements(self) -> int:
        return self.kv_lora_rank + self.pe_dim

    @property
    def entry_bytes(self) -> int:
        if self.ds_mla:
            return DS_MLA_BYTES
        return self.row_elements * (1 if self.is_fp8 else self.input_element_size)

    @property
    def cache_bytes(self) -> int:
        return self.num_slots * self.entry_bytes

    @property
    def input_bytes(self) -> int:
        return self.num_tokens * self.row_elements * self.input_element_size

    @property
    def bytes_moved(self) -> int:
        """kv_c and k_pe read once, the cache entry written once, per valid token."""
        return self.valid_tokens * (self.row_elements * self.input_element_size + self.entry_bytes)


@dataclasses.dataclass
class MLAWorkload(Workload):
    INPUT_NAMES: ClassVar[tuple[str, ...]] = ("kv_c", "k_pe", "slot_mapping", "scale")

    kv_c: torch.Tensor  # [num_tokens, kv_lora_rank]
    k_pe: torch.Tensor  # [num_tokens, pe_dim]
    kv_cache: torch.Tensor  # [num_blocks, block_size, entry]: input dtype, or uint8
    scale: torch.Tensor  # float32 0-dim (per tensor); 1.0 when the cache is not fp8

    def inputs(self) -> list[torch.Tensor]:
        return [self.kv_c, self.k_pe, self.slot_mapping, self.scale]

    def outputs(self) -> list[torch.Tensor]:
        return [self.kv_cache]

    def expected(self) -> list[Output]:
        c = self.case
        _, tokens = slots.valid(self.slot_mapping)
        rows = stored(self.kv_c[tokens], self.k_pe[tokens], self.scale, c)
        if c.ds_mla:  # codes, scales and raw bf16 in one row: compared byte for byte
            return [Output("kv cache", self.kv_cache, self.kv_cache, rows, ("byte",))]
        source = torch.cat([self.kv_c[tokens], self.k_pe[tokens]], dim=1)
        return [Output("kv cache", self.kv_cache, self.kv_cache, rows, ("element",), c.fp8_format, self.scale,
                       source)]


def ds_mla_tile_scales(kv_c: torch.Tensor) -> torch.Tensor:
    """float32 [tokens, 4]: per 128-value tile, the power of two 2**ceil(log2(max(amax / 448, 1e-4))).

    amax / 448 is an IEEE float32 division; log2 is taken in float64 of that float32 value and rounded to float32
    before the ceiling, as CUDA's log2f rounds (so a value a few ulp above a power of two keeps that power)."""
    amax = kv_c.float().abs().reshape(kv_c.shape[0], -1, DS_TILE).amax(dim=2)
    u = torch.clamp(amax / torch.full_like(amax, E4M3_MAX), min=1e-4)  # IEEE (by a scalar, CUDA multiplies)
    exponent = torch.ceil(torch.log2(u.double()).float())
    return torch.exp2(exponent).float()


def stored(kv_c: torch.Tensor, k_pe: torch.Tensor, scale: torch.Tensor, case: Case) -> torch.Tensor:
    """The cache rows [tokens, entry] the reference stores for these inputs."""
    if case.ds_mla:
        scales = ds_mla_tile_scales(kv_c)
        tiles = (kv_c.float().reshape(kv_c.shape[0], -1, DS_TILE) / scales[:, :, None]).clamp(-E4M3_MAX, E4M3_MAX)
        codes = tiles.to(torch.float8_e4m3fn).view(torch.uint8).reshape(kv_c.shape[0], -1)
        return torch.cat([codes, scales.view(torch.uint8), k_pe.contiguous().view(torch.uint8)], dim=1)
    row = torch.cat([kv_c, k_pe], dim=1)
    if not case.is_fp8:
        return row
    used = torch.ones_like(scale) if case.skip_scale else scale
    return fp8.quantize(row, used, case.fp8_format)


def make(case: Case, seed: int, slot_mapping: torch.Tensor, caches: list | None = None) -> MLAWorkload:
    """kv_c and k_pe drawn from N(0, 1), scale = max|x| / 64 over both (fp8; else 1.0), and the cache."""
    gen = torch.Generator(device=case.device).manual_seed(seed)
    kw = dict(generator=gen, device=case.device, dtype=case.torch_dtype)
    kv_c = torch.randn(case.num_tokens, case.kv_lora_rank, **kw)
    k_pe = torch.randn(case.num_tokens, case.pe_dim, **kw)
    if case.is_fp8 and not case.ds_mla and not case.skip_scale:  # vLLM skips the scale only when it is 1.0
        scale = fp8.scales(torch.cat([kv_c, k_pe], dim=1)[:, None, :])
    else:
        scale = torch.ones((), dtype=torch.float32, device=case.device)
    if caches:
        (kv_cache,) = caches
    else:
        dtype = torch.uint8 if case.is_fp8 else case.torch_dtype
        width = case.entry_bytes if case.is_fp8 else case.row_elements
        kv_cache = torch.empty(case.num_blocks, case.block_size, width, dtype=dtype, device=case.device)
    return MLAWorkload(case, slot_mapping, kv_c, k_pe, kv_cache, scale)


def reference_write(w: MLAWorkload) -> None:
    """Write each valid token's row into the cache (negative slots skipped), in plain torch ops.

    Graph-capturable: padding is skipped without a host sync (kvbench.ops.slots.graph_safe)."""
    n = w.slot_mapping.shape[0]
    src, where, any_valid = slots.graph_safe(w.slot_mapping)
    rows = stored(w.kv_c[:n][src], w.k_pe[:n][src], w.scale, w.case)
    flat = w.kv_cache.view(-1, w.kv_cache.shape[-1])
    rows = torch.where(any_valid, rows, flat[where])
    flat[where] = rows
