"""Patterns in wrong output, so that a failure says what went wrong where it can be recognised: which heads, elements
or tokens were never written, fp8 bytes of the other format, the right rows in the wrong slots."""

from __future__ import annotations

import torch

from kvbench.ops import fp8
from kvbench.ops.base import Output
from kvbench.ops.poison import bits, poison_value

OTHER_FP8 = {"e4m3": "e5m2", "e5m2": "e4m3"}
MAX_ROWS_SEARCHED = 16  # missing tokens looked for elsewhere in the output


def ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8' (with en dashes)."""
    out, start = [], None
    for i, v in enumerate(indices):
        if start is None:
            start = v
        if i + 1 == len(indices) or indices[i + 1] != v + 1:
            out.append(f"{start}" if start == v else f"{start}\u2013{v}")
            start = None
    return ", ".join(out)


def unwritten(written: torch.Tensor, o: Output, valid_slots: torch.Tensor) -> str:
    """': heads 32-127 never written' and the like, for `written` [tokens, *row] (True where not poison)."""
    n = written.shape[0]
    per_token = written.reshape(n, -1).any(dim=1)
    missing = (~per_token).nonzero().flatten().tolist()
    if len(missing) == n:
        return f": nothing written at the mapped slots{wrong_slots(o, missing, valid_slots)}"
    if missing:
        return f": tokens {ranges(missing)} of {n} never written{wrong_slots(o, missing, valid_slots)}"
    for i, dim in enumerate(o.row_dims):
        per_index = written.movedim(i + 1, 0).reshape(written.shape[i + 1], -1).any(dim=1)
        never = (~per_index).nonzero().flatten().tolist()
        if never:
            return f": {dim}s {ranges(never)} of {per_index.numel()} never written (in every token)"
    return ""


def first_difference(got: torch.Tensor, o: Output, bad: torch.Tensor) -> str:
    where = [int(i) for i in bad.nonzero()[0]]
    g, e = got[tuple(where)], o.expected[tuple(where)]
    if o.fp8 is not None:
        g, e = g.view(fp8.FORMATS[o.fp8]), e.view(fp8.FORMATS[o.fp8])
    at = ", ".join(f"{name} {i}" for name, i in zip(("token",) + o.row_dims, where))
    return f"first at {at}: got {g.float().item():g}, expected {e.float().item():g}"


def wrong_values(got: torch.Tensor, o: Output) -> str:
    """'; the bytes are e4m3, not e5m2' when the output matches the other fp8 format's reference."""
    if o.fp8 is None or o.source is None:
        return ""
    other = OTHER_FP8[o.fp8]
    same = (fp8.quantize(o.source, o.scale, other) == bits(got)).float().mean().item()
    return f"; the bytes are {other}, not {o.fp8} ({100 * same:.1f}% match an {other} reference)" if same > 0.99 else ""


def wrong_slots(o: Output, missing: list[int], valid_slots: torch.Tensor) -> str:
    """'; token 3's row is at slot 70 (expected 12)' when a missing token's expected row is found elsewhere."""
    if o.offset_dims != 1:  # the offset spans two dims: searching would copy the whole output
        return ""
    rows = o.rows
    flat = o.expected.reshape(o.expected.shape[0], -1)
    wanted = bits(flat[missing[:MAX_ROWS_SEARCHED]])
    sums = wanted.to(torch.int64).sum(dim=1)
    block_size, chunk = rows.shape[1], max(1, 4096 // rows.shape[1])
    for start in range(0, rows.shape[0], chunk):
        part = bits(rows[start : start + chunk]).reshape(-1, flat.shape[1])
        if bool((part == poison_value(part)).all()):
            continue
        hits = (part.to(torch.int64).sum(dim=1)[:, None] == sums[None, :]).nonzero().tolist()
        for row, k in hits:
            if torch.equal(part[row], wanted[k]):
                slot = start * block_size + row
                token = missing[k]
                return f"; the right values in the wrong slots: token {token}'s row is at slot {slot} " \
                       f"(expected slot {int(valid_slots[token])})"
    return ""

