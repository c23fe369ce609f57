"""What is written: one module per cache-write op, each declaring its case, tensors, reference and bytes.

An op module (kvbench.ops.kv is the first) provides `Case` (a kvbench.ops.base.WriteCase), `make(case, seed,
slot_mapping, caches=None)` returning its Workload, and a torch reference (used by the `torch` implementation).
`workloads` builds what one prepared case needs: the verified workload, and for a cold-L2 case the further input
sets it rotates through, all writing into the same outputs at disjoint slots.
"""

from __future__ import annotations

import types

from kvbench.errors import CaseError
from kvbench.ops import (concat_mla_q, convert_fp8, cp_gather, gather, indexer, indexer_gather, kv, mla, mla_grouped,
                         mla_rope, slots, swap_blocks, token_head_quant, upconvert_gather)
from kvbench.ops.base import WriteCase, Workload

OPS: dict[str, types.ModuleType] = {"kv": kv, "mla": mla, "indexer": indexer, "token-head-quant": token_head_quant,
                                    "convert-fp8": convert_fp8, "gather": gather, "cp-gather": cp_gather,
                                    "swap-blocks": swap_blocks, "indexer-gather": indexer_gather,
                                    "upconvert-gather": upconvert_gather, "mla-grouped": mla_grouped,
                                    "concat-mla-q": concat_mla_q, "mla-rope": mla_rope}


def get(name: str) -> types.ModuleType:
    try:
        return OPS[name]
    except KeyError:
        raise CaseError(f"op {name!r} is not supported; choose one of: {', '.join(OPS)}") from None


def of(case: WriteCase) -> types.ModuleType:
    return OPS[case.OP]


def workloads(case: WriteCase, seed: int, sets: int = 1) -> list[Workload]:
    """`sets` workloads sharing one set of outputs: the first with inputs from `seed`, the others (a cold-L2
    rotation) from the case's seed + i, each with its own disjoint slots."""
    op = of(case)
    if hasattr(op, "make_workloads"):  # ops whose work is not a slot mapping (the read side, block copies)
        return op.make_workloads(case, seed, sets)
    maps = slots.slot_sets(case.slots, case.num_tokens, case.num_blocks, case.block_size, case.seed, sets,
                           case.device)
    first = op.make(case, seed, maps[0])
    return [first] + [op.make(case, case.seed + i, maps[i], caches=first.outputs()) for i in range(1, sets)]


def workload(case: WriteCase, seed: int | None = None) -> Workload:
    """One workload of `case` (inputs from `seed`, default the case's own), with freshly allocated outputs."""
    return workloads(case, case.seed if seed is None else seed)[0]
