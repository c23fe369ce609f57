"""Verification before timing: run the implementation once on poisoned caches and compare with the reference.

The caches are filled with 0xFF bytes (NaN in every float format, never produced from finite inputs). After one
write, every token at a valid slot must hold exactly what the reference stores (bit-exact; for fp8, as each
implementation declares: bit-exact, at most one fp8 step away, or within vLLM's own test tolerance after
dequantizing), and every other cache element must still be poison (padding skipped, nothing written elsewhere).
"""

from __future__ import annotations

import dataclasses

import torch

from kvbench import fp8, layouts
from kvbench.device import synchronize
from kvbench.errors import VerificationError
from kvbench.impls.base import Implementation, Writer
from kvbench.impls.torch_ref import stored
from kvbench.workload import Workload

POISON_BYTE = 0xFF
_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32}
FP8_TOLERANCE = dict(atol=1e-3, rtol=0.1)  # vLLM's tests/kernels/test_cache.py, after dequantizing
FP8_CHECKS = {
    "exact": "bit-exact",
    "step": "fp8 within 1 step of round-to-nearest",
    "tolerance": "fp8 within vLLM test tolerance",
}


@dataclasses.dataclass(frozen=True)
class Verified:
    tokens_checked: int
    method: str  # "bit-exact", or for fp8 caches one of FP8_CHECKS' descriptions


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(_INT_OF_SIZE[t.element_size()])


def _poison_value(t: torch.Tensor) -> int:
    """The poison pattern (all bytes 0xFF) as the integer `_bits(t)` holds."""
    return POISON_BYTE if t.element_size() == 1 else -1


def _words(t: torch.Tensor) -> torch.Tensor:
    """`t`'s bytes as int64 words where its innermost dimension allows (8x fewer elements to fill and scan),
    else as integers of its element size. All-0xFF poison reads as -1 either way, except in 1-byte integers."""
    if t.stride(-1) == 1 and (t.shape[-1] * t.element_size()) % 8 == 0:
        return t.view(torch.int64)
    return _bits(t)


def poison(w: Workload) -> None:
    for cache in (w.key_cache, w.value_cache):
        words = _words(cache)
        words.fill_(_poison_value(words))


def _poison_row(w: Workload) -> torch.Tensor:
    c = w.case
    row = torch.full((c.num_heads, c.head_size * c.cache_element_size), POISON_BYTE, dtype=torch.uint8, device=c.device)
    return row.view(c.cache_dtype)


def _method(impl: Implementation, w: Workload) -> str:
    return FP8_CHECKS[impl.fp8_check] if w.case.is_fp8 else "bit-exact"


def _first_difference(got: torch.Tensor, expected: torch.Tensor, bad: torch.Tensor, fmt: str | None) -> str:
    t, h, d = (int(i) for i in bad.nonzero()[0])
    g, e = got[t, h, d], expected[t, h, d]
    if fmt is not None:
        g, e = g.view(fp8.FORMATS[fmt]), e.view(fp8.FORMATS[fmt])
    return f"first at token {t}, head {h}, dim {d}: got {g.float().item():g}, expected {e.float().item():g}"


def _all_poison(cache: torch.Tensor) -> bool:
    """Whether every byte of `cache` is poison: one min/max pass and no temporaries (with the int64 poison fill,
    verifying 16 GiB of caches fell from 85 ms to ~10 ms on an H200)."""
    words = _words(cache)
    low, high = torch.aminmax(words)
    return int(low) == int(high) == _poison_value(words)


def _count_not_poison(cache: torch.Tensor, blocks_per_chunk: int = 1024) -> int:
    """Elements of `cache` that are not poison, a chunk of blocks at a time (caches can be tens of GiB)."""
    poison_value = _poison_value(cache)
    return sum(
        int((_bits(cache[i : i + blocks_per_chunk]) != poison_value).sum())
        for i in range(0, cache.shape[0], blocks_per_chunk)
    )


def _check_cache(impl, w, which, slots, rows) -> None:
    case = w.case
    cache = w.key_cache if which == "key" else w.value_cache
    x, scale = (w.key, w.k_scale) if which == "key" else (w.value, w.v_scale)
    got = layouts.gather(case.layout, which, cache, slots)
    expected = stored(x[rows], scale, case)
    # Counted with the same kernels as the comparison below (!= and sum): in a fresh process every other kind of
    # kernel costs its first-use loading (~10 ms each on an H100).
    written = int((_bits(got) != _poison_value(got)).sum())
    if written < got.numel():
        raise VerificationError(f"{impl.name}: {which} cache {100 * written / got.numel():.1f}% written "
                                f"(expected 100%)")
    if case.is_fp8 and impl.fp8_check == "tolerance":
        g, e = fp8.dequantize(got, scale, case.fp8_format), fp8.dequantize(expected, scale, case.fp8_format)
        bad = ~torch.isclose(g, e, **FP8_TOLERANCE)
    elif case.is_fp8 and impl.fp8_check == "step":
        bad = fp8.steps_apart(got, expected) > 1
    else:
        bad = _bits(got) != _bits(expected)
    n_bad = int(bad.sum())
    if n_bad:
        where = _first_difference(got, expected, bad, case.fp8_format)
        raise VerificationError(
            f"{impl.name}: {which} cache: {n_bad} of {bad.numel()} elements differ from the reference ({where})"
        )
    # Put the poison back where the tokens went: anything else that is not poison was written out of place.
    layouts.scatter(case.layout, which, cache, slots, _poison_row(w))
    if not _all_poison(cache):
        stray = _count_not_poison(cache)
        raise VerificationError(
            f"{impl.name}: {which} cache: {stray} elements written outside the mapped slots "
            f"(padding tokens must be skipped)"
        )


def verify(impl: Implementation, w: Workload, write: Writer) -> Verified:
    """Run `write` once on poisoned caches and check both caches; raise VerificationError on any difference."""
    poison(w)
    write()
    synchronize(w.case.device)
    n = w.slot_mapping.shape[0]
    valid = w.slot_mapping >= 0
    slots = w.slot_mapping[valid]
    rows = torch.arange(n, device=w.slot_mapping.device)[valid]
    for which in ("key", "value"):
        _check_cache(impl, w, which, slots, rows)
    return Verified(tokens_checked=int(valid.sum()), method=_method(impl, w))
