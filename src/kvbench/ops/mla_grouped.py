"""vLLM's `concat_and_cache_mla_grouped(kv_c, k_pe, kv_cache_ptrs, slot_mapping, block_size, block_stride,
entry_stride, kv_scales, kv_cache_dtype)`: the MLA latent rows of several layers written into their caches in one
launch (Kimi-K3's DSpark drafter inserts the context KV of every target layer at once: vllm/models/kimi_k3/nvidia/
dspark_mla.py; vLLM >= 0.27, kv_scales and kv_cache_dtype from 0.30).

kv_c [num_layers, num_tokens, kv_lora_rank] and k_pe [num_layers, num_tokens, pe_dim] are written, for each layer
l and token t with slot_mapping[l, t] >= 0, as the row concat(kv_c[l, t], k_pe[l, t]) of layer l's cache, whose
base address is kv_cache_ptrs[l] (int64, on the device): at slot s, element offset (s / block_size) * block_stride
+ (s % block_size) * entry_stride (the layers share one block layout). `auto` copies the values; `fp8` stores
saturate(x / kv_scales[l]) rounded to nearest as e4m3 codes (one float32 scale per layer), as concat_and_cache_mla
does with its one scale. Here every layer writes the same slots (vLLM passes one slot mapping expanded over the
layers; kvbench passes it materialized, [num_layers, num_tokens]) and the rows are DeepSeek's 512 + 64. Read from
vLLM's csrc/cache_kernels.cu (concat_and_cache_mla_grouped), _custom_ops.py and its caller.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch

from kvbench.ops import fp8, slots
from kvbench.ops.base import Output, WriteCase, Workload, positive

KV_CACHE_DTYPES = {"auto": None, "fp8": "e4m3", "fp8_e4m3": "e4m3"}


@dataclasses.dataclass(frozen=True)
class Case(WriteCase):
    """`num_tokens` MLA rows of each of num_layers layers written into the layers' caches in one call."""

    OP: ClassVar[str] = "mla-grouped"
    BLOCK_SIZES: ClassVar[tuple[int, ...]] = (16, 64)
    FP8_FORMATS: ClassVar[dict[str, str | None]] = KV_CACHE_DTYPES
    KV_CACHE_DTYPES: ClassVar[tuple[str, ...]] = tuple(KV_CACHE_DTYPES)

    num_blocks: int = 1024
    block_size: int = 64
    kv_lora_rank: int = 512
    pe_dim: int = 64
    num_layers: int = 4

    def __post_init__(self):
        super().__post_init__()
        positive(self, "kv_lora_rank", "pe_dim", "num_layers")

    @property
    def entry(self) -> int:
        return self.kv_lora_rank + self.pe_dim



    @property
    def cache_bytes(self) -> int:
        return self.num_layers * self.num_slots * self.entry * self.cache_element_size

    @property
    def input_bytes(self) -> int:
        return self.num_layers * self.num_tokens * self.entry * self.input_element_size

    @property
    def bytes_moved(self) -> int:
        """Every layer's kv_c and k_pe read once and its row written once, per valid token."""
        return self.num_layers * self.valid_tokens * self.entry * (self.input_element_size + self.cache_element_size)


@dataclasses.dataclass
class GroupedWorkload(Workload):
    INPUT_NAMES: ClassVar[tuple[str, ...]] = ("kv_c", "k_pe", "kv_cache_ptrs", "slot_mapping (layers)", "kv_scales")

    kv_c: torch.Tensor  # [layers, num_tokens, kv_lora_rank]
    k_pe: torch.Tensor  # [layers, num_tokens, pe_dim]
    caches: list[torch.Tensor]  # each [num_blocks, block_size, entry]: dtype, or uint8
    kv_cache_ptrs: torch.Tensor  # int64 [layers]: the caches' addresses
    layer_slots: torch.Tensor  # int64 [layers, num_tokens]: slot_mapping for every layer
    kv_scales: torch.Tensor  # float32 [layers] (1.0 when the cache is not fp8)

    def inputs(self) -> list[torch.Tensor]:
        return [self.kv_c, self.k_pe, self.kv_cache_ptrs, self.layer_slots, self.kv_scales]

    def outputs(self) -> list[torch.Tensor]:
        return list(self.caches)

    def expected(self) -> list[Output]:
        c = self.case
        _, tokens = slots.valid(self.slot_mapping)
        out = []
        for layer, cache in enumerate(self.caches):
            rows = stored(self.kv_c[layer, tokens], self.k_pe[layer, tokens], self.kv_scales[layer], c)
            source = torch.cat([self.kv_c[layer, tokens], self.k_pe[layer, tokens]], dim=1)
            out.append(Output(f"layer {layer} cache", cache, cache, rows, ("element",), c.fp8_format,
                              self.kv_scales[layer], source))
        return out


def stored(kv_c: torch.Tensor, k_pe: torch.Tensor, scale: torch.Tensor, case: Case) -> torch.Tensor:
    row = torch.cat([kv_c, k_pe], dim=-1)
    return fp8.quantize(row, scale, case.fp8_format) if case.is_fp8 else row


def make(case: Case, seed: int, slot_mapping: torch.Tensor, caches: list | None = None) -> GroupedWorkload:
    """N(0, 1) rows; per layer an fp8 scale max|x| / 64 of its rows (else 1.0); the layers' caches."""
    gen = torch.Generator(device=case.device).manual_seed(seed)
    kw = dict(generator=gen, device=case.device, dtype=case.torch_dtype)
    kv_c = torch.randn(case.num_layers, case.num_tokens, case.kv_lora_rank, **kw)
    k_pe = torch.randn(case.num_layers, case.num_tokens, case.pe_dim, **kw)
    if case.is_fp8:
        scales = torch.stack([fp8.scales(torch.cat([kv_c[i], k_pe[i]], dim=1)[:, None, :])
                              for i in range(case.num_layers)])
    else:
        scales = torch.ones(case.num_layers, dtype=torch.float32, device=case.device)
    if caches is None:
        buffer = torch.empty(case.num_layers, case.num_blocks, case.block_size, case.entry, dtype=case.cache_dtype,
                             device=case.device)
        caches = list(buffer.unbind(0))
    ptrs = torch.tensor([c.data_ptr() for c in caches], dtype=torch.int64, device=case.device)
    layer_slots = slot_mapping[None, :].expand(case.num_layers, -1).contiguous()
    return GroupedWorkload(case, slot_mapping, kv_c, k_pe, list(caches), ptrs, layer_slots, scales)


def reference_write(w: GroupedWorkload) -> None:
    """Each layer's rows written at its slots (torch ops; padding skipped without a host sync)."""
    n = w.slot_mapping.shape[0]
    for layer, cache in enumerate(w.caches):
        src, where, any_valid = slots.graph_safe(w.layer_slots[layer])
        rows = stored(w.kv_c[layer, :n][src], w.k_pe[layer, :n][src], w.kv_scales[layer], w.case)
        flat = cache.view(-1, cache.shape[-1])
        flat[where] = torch.where(any_valid, rows, flat[where])
