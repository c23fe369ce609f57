"""The tensors of one case: fresh random inputs, slot mapping, fp8 scales and the caches."""

from __future__ import annotations

import dataclasses

import torch

from kvbench import fp8, layouts
from kvbench.case import Case


@dataclasses.dataclass
class Workload:
    case: Case
    key: torch.Tensor  # [num_tokens, heads, head_size]
    value: torch.Tensor
    slot_mapping: torch.Tensor  # int64 [num_tokens]; negative = padding, skip
    key_cache: torch.Tensor
    value_cache: torch.Tensor
    k_scale: torch.Tensor  # float32, 0-dim or [heads]; 1.0 when the cache is not fp8
    v_scale: torch.Tensor


def random_inputs(case: Case, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """key and value [num_tokens, heads, head_size] drawn from N(0, 1) (vLLM's benchmark: torch.randn)."""
    gen = torch.Generator(device=case.device).manual_seed(seed)
    shape = (case.num_tokens, case.num_heads, case.head_size)
    key = torch.randn(shape, generator=gen, device=case.device, dtype=case.torch_dtype)
    value = torch.randn(shape, generator=gen, device=case.device, dtype=case.torch_dtype)
    return key, value


COLD_L2_FACTOR = 4  # cold: the sets of one rotation touch at least 4x the L2
MAX_ROTATION = 2048


def make(case: Case, seed: int | None = None, caches: tuple[torch.Tensor, torch.Tensor] | None = None,
         slot_seed: int | None = None) -> Workload:
    """A workload with inputs drawn from `seed` (default: the case's seed), slots from `slot_seed` (default: the
    case's seed), and freshly allocated caches unless `caches` are given."""
    key, value = random_inputs(case, case.seed if seed is None else seed)
    per_head = case.fp8_scales == "head"
    if case.is_fp8:
        k_scale, v_scale = fp8.scales(key, per_head), fp8.scales(value, per_head)
    else:
        k_scale = v_scale = torch.ones((), dtype=torch.float32, device=case.device)
    key_cache, value_cache = caches or layouts.allocate(case)
    slots = layouts.slot_mapping(case, slot_seed)
    return Workload(case, key, value, slots, key_cache, value_cache, k_scale, v_scale)


def rotation_size(case: Case, bytes_per_call: int, l2_bytes: int) -> int:
    """How many input sets a cold-L2 case rotates through: enough that one rotation touches COLD_L2_FACTOR x L2."""
    if case.l2 == "warm":
        return 1
    return max(1, min(MAX_ROTATION, -(-COLD_L2_FACTOR * l2_bytes // bytes_per_call)))


def rotation(w: Workload, sets: int) -> list[Workload]:
    """`w` and `sets - 1` more workloads with their own inputs and slot mappings, writing into `w`'s caches."""
    caches = (w.key_cache, w.value_cache)
    return [w] + [make(w.case, seed=w.case.seed + i, caches=caches, slot_seed=w.case.seed + i) for i in range(1, sets)]
