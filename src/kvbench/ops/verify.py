"""Verification: run an implementation on poisoned outputs and compare every output with the reference.

The outputs are filled with 0xFF bytes (NaN in every float format, never produced from finite inputs). After the
call, every valid token's row must hold exactly what the reference stores (for fp8 outputs, as the implementation
declares: bit-exact, at most one fp8 step away, or within vLLM's own test tolerance after dequantizing), every
other element must still be poison (padding skipped, nothing written elsewhere), and the inputs must be unchanged.
The same check runs before timing (one call) and after it (the very graph replay or eager sample that was timed,
kvbench.runner). Wrong output raises VerificationError, with the pattern of the damage where one is recognisable
(kvbench.ops.explain).
"""

from __future__ import annotations

import dataclasses

import torch

from kvbench.errors import VerificationError
from kvbench.ops import explain, fp8
from kvbench.ops.poison import all_poison, bits, count_not_poison, poison, poison_value
from kvbench.ops.base import Output, Workload

FP8_TOLERANCE = dict(atol=1e-3, rtol=0.1)  # vLLM's tests/kernels/test_cache.py, after dequantizing
FP8_CHECKS = {
    "exact": "bit-exact",
    "step": "fp8 within 1 step of round-to-nearest",
    "tolerance": "fp8 within vLLM test tolerance",
}


@dataclasses.dataclass(frozen=True)
class Verified:
    tokens_checked: int
    method: str  # "bit-exact", or for fp8 outputs one of FP8_CHECKS' descriptions


def fingerprint(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Order-independent checksums of each tensor's bytes (sum of bytes, wrapped sum of int32 words), as one tensor
    on the tensors' device: enough to notice a writer that changes its inputs, without keeping a copy of them."""
    sums = []
    for t in tensors:
        flat = t.contiguous().reshape(-1).view(torch.uint8)
        words = flat.view(torch.int32) if flat.numel() % 4 == 0 else flat
        sums += [flat.sum(dtype=torch.int64), words.sum(dtype=torch.int64)]
    return torch.stack(sums)


def method(fp8_check: str, outputs: list[Output]) -> str:
    return FP8_CHECKS[fp8_check] if any(o.fp8 for o in outputs) else "bit-exact"


def _differs(o: Output, got: torch.Tensor, fp8_check: str) -> torch.Tensor:
    if o.fp8 and fp8_check == "tolerance":
        g, e = fp8.dequantize(got, o.scale, o.fp8), fp8.dequantize(o.expected, o.scale, o.fp8)
        return ~torch.isclose(g, e, **FP8_TOLERANCE)
    if o.fp8 and fp8_check == "step":
        return fp8.steps_apart(got, o.expected) > 1
    return bits(got) != bits(o.expected)


def check_output(name: str, o: Output, valid_slots: torch.Tensor, fp8_check: str) -> None:
    """Compare the rows at `valid_slots` with the expected ones, then put the poison back there (so that what is
    left can be checked for stray writes)."""
    block_size = o.rows.shape[1]
    block, offset = torch.div(valid_slots, block_size, rounding_mode="floor"), valid_slots % block_size
    got = o.rows[block, offset].reshape(o.expected.shape)
    # Counted with the same kernels as the comparison below (!= and sum): in a fresh process every other kind of
    # kernel costs its first-use loading (~10 ms each on an H100).
    written = bits(got) != poison_value(got)
    n_written = int(written.sum())
    if n_written < got.numel():
        raise VerificationError(f"{name}: {o.name} {100 * n_written / got.numel():.1f}% written (expected 100%)"
                                f"{explain.unwritten(written, o, valid_slots)}")
    bad = _differs(o, got, fp8_check)
    n_bad = int(bad.sum())
    if n_bad:
        raise VerificationError(f"{name}: {o.name}: {n_bad} of {bad.numel()} elements differ from the reference "
                                f"({explain.first_difference(got, o, bad)}){explain.wrong_values(got, o)}")
    row_shape = (valid_slots.numel(), *o.rows.shape[2:])
    o.rows[block, offset] = torch.full(row_shape, poison_value(got), dtype=bits(got).dtype,
                                       device=got.device).view(o.rows.dtype)


def check_untouched(name: str, tensor: torch.Tensor, label: str) -> None:
    """After the valid rows were put back to poison: anything that is not poison was written out of place."""
    if not all_poison(tensor):
        stray = count_not_poison(tensor)
        raise VerificationError(f"{name}: {label}: {stray} elements written outside the mapped slots "
                                f"(padding tokens must be skipped)")


def fingerprints(workloads: list[Workload]) -> list[torch.Tensor]:
    return [fingerprint(w.inputs()) for w in workloads]


def verify(name: str, workloads: list[Workload], run, fp8_check: str = "exact",
           inputs_before: list[torch.Tensor] | None = None) -> Verified:
    """Poison the outputs, `run()` (which must write every workload in `workloads`, sharing their outputs), and
    check each workload's outputs, and that its inputs are as `inputs_before` (fingerprints taken before the
    first call; by default just before this one); raise VerificationError on any difference."""
    poison(workloads[0].outputs())
    before = inputs_before if inputs_before is not None else fingerprints(workloads)
    run()
    if workloads[0].case.device == "cuda":
        torch.cuda.synchronize()
    checked, tokens = [], 0
    for w, prints in zip(workloads, before):
        changed = (fingerprint(w.inputs()) != prints).view(-1, 2).any(dim=1).nonzero().flatten().tolist()
        if changed:  # first: the reference below is computed from the inputs
            names = ", ".join(w.INPUT_NAMES[i] for i in changed)
            raise VerificationError(f"{name}: changed its inputs while writing ({names})")
        valid_slots = w.slot_mapping[w.slot_mapping >= 0]
        expected = w.expected()
        for o in expected:
            check_output(name, o, valid_slots, fp8_check)
        checked += expected
        tokens += int(valid_slots.numel())
    for o in checked[: len(workloads[0].outputs())]:  # the first workload's: the outputs all sets share
        check_untouched(name, o.tensor, o.name)
    return Verified(tokens_checked=tokens, method=method(fp8_check, checked))
