"""Verification: run an implementation on poisoned outputs and compare every output with the reference.

The outputs are filled with 0xFF bytes (NaN in every float format, never produced from finite inputs). After the
call, every valid token's row must hold exactly what the reference stores (for fp8 outputs, as the implementation
declares: bit-exact, at most one fp8 step away, or within vLLM's own test tolerance after dequantizing), every other
element must still be poison (padding skipped, nothing written elsewhere), and the inputs must be unchanged. The
same check runs on the timed path (the very graph replay or eager calls that are timed): in sweeps and batches
before the samples, and after them on the written rows only (`whole` False); in a lone asv process on the first
eager call and, whole, after the first sample; for mla-rope on the first eager call and, whole, after the samples
(kvbench.runner). After a cold-L2 rotation (up to 2048 input sets written to disjoint slots of shared outputs),
FULL_CHECKS sets, evenly spread, are compared with the reference (FULL_RECHECKS in the re-check after the samples);
every set's rows must be written, the inputs of every set unchanged, and nothing written elsewhere (comparing all
2048 cost ~1 s per case, kernel by kernel; the sets' inputs are fingerprinted together, input by input). Wrong
output raises VerificationError, with the pattern of the damage where one is recognisable (kvbench.ops.explain).
Outputs that are not written at slots (a gather's dense [tokens, ...] destination, a block copy's destination
blocks) say where their rows are (Output.slots): the same checks apply there, and the caches such ops read are
inputs (random contents, fingerprinted, never poisoned). They are verified one workload at a time (no rotation).
"""

from __future__ import annotations

import dataclasses

import torch

from kvbench.errors import VerificationError
from kvbench.ops import explain, fp8
from kvbench.ops.poison import all_poison, bits, count_not_poison, poison, poison_value
from kvbench.ops.base import Output, Workload, slot_index

FP8_TOLERANCE = dict(atol=1e-3, rtol=0.1)  # vLLM's tests/kernels/test_cache.py, after dequantizing
CHECKS = {  # how quantized outputs are compared (an implementation's `compare`); everything else is bit-exact
    "exact": "bit-exact",
    "step": "fp8 within 1 step of round-to-nearest",  # also: int8 codes within 1, float32 scales within 2 ulp
    "tolerance": "fp8 within vLLM test tolerance",  # dequantized; float32 scales as vLLM's tests compare them
}
SCALE_TOLERANCE = dict(atol=1e-4, rtol=1e-3)  # vLLM's tests/quantization/test_per_token_kv_cache.py
FULL_CHECKS = 64  # sets of a rotation compared with the reference after the timed run (the first and last included)
FULL_RECHECKS = 8  # the same, in the re-check after the samples (whole False): every other set's rows must be written


@dataclasses.dataclass(frozen=True)
class Verified:
    tokens_checked: int
    method: str  # "bit-exact", or for quantized outputs one of CHECKS' descriptions


def fingerprint(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Order-independent checksums of each tensor's bytes (sum of bytes, wrapped sum of int32 words), as one tensor
    on the tensors' device: enough to notice a writer that changes its inputs, without keeping a copy of them."""
    sums = []
    for t in tensors:
        flat = t.contiguous().reshape(-1).view(torch.uint8)
        words = flat.view(torch.int32) if flat.numel() % 4 == 0 else flat
        # on the first tensor's device (a block copy reads a cache on one device and its mapping on the CPU)
        sums += [flat.sum(dtype=torch.int64).to(tensors[0].device), words.sum(dtype=torch.int64).to(tensors[0].device)]
    return torch.stack(sums)


def method(check: str, outputs: list[Output]) -> str:
    """How the outputs were compared, in words (what a result's `verified` says)."""
    if check == "exact" or not any(o.fp8 or o.is_scale or not o.expected.dtype.is_floating_point for o in outputs):
        return "bit-exact"
    if check == "step" and not any(o.fp8 for o in outputs):
        return "codes within 1, scales within 2 ulp"
    return CHECKS[check]


def _differs(o: Output, got: torch.Tensor, check: str) -> torch.Tensor:
    """Where `got` is wrong: bit for bit, or as the implementation's `compare` allows for quantized outputs (fp8 or
    integer codes, and the float32 scales computed with them)."""
    if check != "exact" and o.fp8 is not None:
        if check == "tolerance":
            g, e = fp8.dequantize(bits(got), o.scale, o.fp8), fp8.dequantize(bits(o.expected), o.scale, o.fp8)
            return ~torch.isclose(g, e, **FP8_TOLERANCE)
        return fp8.steps_apart(bits(got), bits(o.expected)) > 1
    if check != "exact" and o.is_scale:
        if check == "tolerance":
            return ~torch.isclose(got, o.expected, **SCALE_TOLERANCE)
        return (bits(got).long() - bits(o.expected).long()).abs() > 2  # ulps
    if check != "exact" and not got.dtype.is_floating_point:  # integer codes
        return (got.long() - o.expected.long()).abs() > 1
    return bits(got) != bits(o.expected)


def check_output(name: str, o: Output, valid_slots: torch.Tensor, check: str) -> None:
    """Compare the rows at `valid_slots` with the expected ones, then put the poison back there (so that what is
    left can be checked for stray writes)."""
    where = slot_index(o.rows, o.offset_dims, valid_slots)
    got = o.rows[where].reshape(o.expected.shape)
    # Counted with the same kernels as the comparison below (!= and sum): in a fresh process every other kind of
    # kernel costs its first-use loading (~10 ms each on an H100).
    # Where the reference itself stores all-0xFF bytes (int8 -1, a raw byte of a scale), poison is the right
    # value: such elements count as written.
    written = (bits(got) != poison_value(got)) | (bits(o.expected) == poison_value(got))
    n_written = int(written.sum())
    if n_written < got.numel():
        raise VerificationError(f"{name}: {o.name} {100 * n_written / got.numel():.1f}% written (expected 100%)"
                                f"{explain.unwritten(written, o, valid_slots)}")
    bad = _differs(o, got, check)
    n_bad = int(bad.sum())
    if n_bad:
        raise VerificationError(f"{name}: {o.name}: {n_bad} of {bad.numel()} elements differ from the reference "
                                f"({explain.first_difference(got, o, bad)}){explain.wrong_values(got, o)}")
    _poison_at(o, where)


def check_untouched(name: str, tensor: torch.Tensor, label: str) -> None:
    """After the valid rows were put back to poison: anything that is not poison was written out of place."""
    if not all_poison(tensor):
        stray = count_not_poison(tensor)
        raise VerificationError(f"{name}: {label}: {stray} elements written outside the mapped slots "
                                f"(padding tokens must be skipped)")


def _set_sums(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """fingerprint's two sums for each of `tensors` (one input of every set of a rotation: equal sizes, one device),
    as [len(tensors), 2], from one copy of their bytes side by side and two reductions instead of two reductions
    each (a rotation has up to 2048 sets: ~0.2 s of kernel launches per pass); None where they differ in size or
    device."""
    first = tensors[0]
    if any(t.nbytes != first.nbytes or t.device != first.device for t in tensors) or first.nbytes == 0:
        return None
    rows = torch.cat([t.contiguous().reshape(-1).view(torch.uint8) for t in tensors]).view(len(tensors), -1)
    words = rows.view(torch.int32) if rows.shape[1] % 4 == 0 else rows
    return torch.stack([rows.sum(dim=1, dtype=torch.int64), words.sum(dim=1, dtype=torch.int64)], dim=1)


def fingerprints(workloads: list[Workload]) -> list[torch.Tensor]:
    """Each workload's fingerprint of its inputs (as `fingerprint`, the same values), a rotation's sets at once."""
    if len(workloads) == 1:
        return [fingerprint(workloads[0].inputs())]
    columns = list(zip(*(w.inputs() for w in workloads)))  # one input of every set
    sums = [_set_sums(list(ts)) for ts in columns]
    if any(s is None for s in sums):
        return [fingerprint(w.inputs()) for w in workloads]
    device = columns[0][0].device
    return list(torch.stack([s.to(device) for s in sums], dim=1).reshape(len(workloads), -1).unbind(0))


def _check_inputs(name: str, workloads: list[Workload], before: list[torch.Tensor]) -> None:
    """Every set's inputs as fingerprinted before (one comparison, one synchronisation, for all the sets)."""
    now = torch.stack(fingerprints(workloads))
    changed = (now != torch.stack(before)).view(len(workloads), -1, 2).any(dim=2).any(dim=0)
    names = [workloads[0].INPUT_NAMES[i] for i in changed.nonzero().flatten().tolist()]
    if names:  # first: the reference below is computed from the inputs
        raise VerificationError(f"{name}: changed its inputs while writing ({', '.join(names)})")


def spread(n: int, k: int) -> list[int]:
    """At most k (>= 1) indices of range(n), evenly spread, the first and the last included when k >= 2."""
    if n <= k:
        return list(range(n))
    if k == 1:
        return [0]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _slots_written(workloads: list[Workload]) -> torch.Tensor:
    """The valid slots of all the workloads (disjoint sets of a rotation)."""
    return torch.cat([w.slot_mapping[w.slot_mapping >= 0] for w in workloads])


def _poison_at(o: Output, where) -> None:
    """Put the poison back at `where` (slot_index's index of o.rows), writing through to the output's storage."""
    bits(o.rows)[where] = poison_value(o.rows)


def _check_written(name: str, outputs: list[Output], workloads: list[Workload]) -> None:
    """The sets not compared with the reference: each valid token's row of each output holds something other than
    poison; then the poison is put back there (all sets at once: their slots are disjoint)."""
    valid = _slots_written(workloads)
    for o in outputs:
        where = slot_index(o.rows, o.offset_dims, valid)
        got = o.rows[where]
        rows_written = (bits(got) != poison_value(got)).reshape(valid.numel(), -1).any(dim=1)
        missing = int((~rows_written).sum())
        if missing:
            raise VerificationError(f"{name}: {o.name}: {missing} of {valid.numel()} rows of the rotation's other "
                                    f"input sets never written")
        _poison_at(o, where)


def _poison_rows(outputs: list[Output], workloads: list[Workload]) -> None:
    """Poison only the rows the workloads write (their valid slots, or an output's own rows)."""
    valid = _slots_written(workloads)
    for o in outputs:
        _poison_at(o, slot_index(o.rows, o.offset_dims, valid if o.slots is None else o.slots))


def verify(name: str, workloads: list[Workload], run, check: str = "exact",
           inputs_before: list[torch.Tensor] | None = None, whole: bool = True) -> Verified:
    """Poison the outputs, `run()` (which must write every workload in `workloads`, sharing their outputs), and
    check the workloads' outputs (FULL_CHECKS of them against the reference, the others for being written), and
    that their inputs are as `inputs_before` (fingerprints taken before the first call; by default just before this
    one); raise VerificationError on any difference. `whole` False: only the rows the workloads write are poisoned
    and checked, nothing elsewhere (no pass over the rest of the outputs): a re-check after the samples of a timed
    path that a whole check passed before them (kvbench.runner), to catch a writer that changes its inputs or
    goes wrong or idle during the samples."""
    full = spread(len(workloads), FULL_CHECKS if whole else FULL_RECHECKS)
    references = {}
    if whole:
        poison(workloads[0].outputs())
    else:  # the references first, so that their Output rows say what to poison (an op whose reference depends on
        # the calls made so far cannot be re-checked so: Workload.CHECK_FIRST_CALL)
        if workloads[0].CHECK_FIRST_CALL:
            raise ValueError(f"{name}: {workloads[0].case.OP} is checked whole only (its reference knows the first "
                             f"call)")
        references = {i: workloads[i].expected() for i in full}
        _poison_rows(references[full[0]], workloads)
    before = inputs_before if inputs_before is not None else fingerprints(workloads)
    run()
    if workloads[0].case.device == "cuda":
        torch.cuda.synchronize()
    _check_inputs(name, workloads, before)
    checked, tokens, n_first = [], 0, 0
    for i in full:
        w = workloads[i]
        valid_slots = w.slot_mapping[w.slot_mapping >= 0]
        expected = references[i] if i in references else w.expected()
        for o in expected:
            check_output(name, o, valid_slots if o.slots is None else o.slots, check)
        checked += expected
        n_first = n_first or len(expected)  # Outputs, not tensors: the indexer's codes and scales share one
        tokens += int(valid_slots.numel())
    shared = checked[:n_first]  # the first compared workload's Outputs: the outputs all sets share
    compared = set(full)
    rest = [w for i, w in enumerate(workloads) if i not in compared]
    if rest and any(o.slots is not None for o in shared):
        raise ValueError(f"{name}: outputs placed by their own slots are verified one workload at a time")
    if rest:
        _check_written(name, shared, rest)
    if whole:
        for o in shared:
            check_untouched(name, o.tensor, o.name)
    return Verified(tokens_checked=tokens, method=method(check, checked))
