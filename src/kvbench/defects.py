"""vLLM's known defects: failures kvbench expects, told apart from new ones.

Each entry says which implementation of which op shows it, for which cases (a predicate of the case's fields, as
`dataclasses.asdict(case)` gives them), in which vLLM releases it was measured, the failure message it produces (a
regular expression searched in the verifier's message) and the upstream report where there is one.

A failure is a known defect only when the op, the implementation, the case predicate and the message all match
(`match`). The installed vLLM's version does not decide: a failure in a release newer than the last one measured
is still the known defect, "still present in X" (`Defect.note`). A case inside a defect's predicate that passes is
reported "fixed in X" (`fixed`). A known defect is still a failure everywhere (asv records it failed, the site
shows it so); only the verdicts (`kvbench asv-summary`, `kvbench sweep`, scripts/bench.sh) count it apart.

tests/test_gpu_vllm.py asserts every entry on a GPU with vLLM's real kernels through `applying` and `match`: a
case inside a predicate must fail with the entry's message, every other case must pass; when a release fixes a
defect that test fails, asking for this list to be updated.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Mapping

from kvbench.measure.machine import vllm_version

ELEMENT_BYTES = {"half": 2, "bfloat16": 2, "float": 4}
PAGED_THREADS = 512  # reshape_and_cache's one thread per 16-byte chunk of a token, at most 512, no loop
NO_UPSTREAM = "no upstream issue found"


@dataclasses.dataclass(frozen=True)
class Defect:
    id: str  # short and stable: what the state log and the summaries name
    title: str
    op: str  # kvbench.ops name
    implementation: str  # kvbench.impls name
    applies: Callable[[Mapping[str, Any]], bool] = dataclasses.field(repr=False)  # the case predicate
    scope: str  # the predicate in words
    message: str  # regular expression searched in the failure message
    first_seen: str  # the first and last vLLM releases measured affected
    last_seen: str
    measured: str  # which releases were measured, and what is assumed beyond them
    open: bool = True  # still there in the newest release measured
    upstream: str | None = None  # the upstream report (URL), None when none was found

    @property
    def reference(self) -> str:
        """'vLLM issue 54341' or 'no upstream issue found'."""
        if self.upstream is None:
            return NO_UPSTREAM
        number = re.search(r"/issues/(\d+)$", self.upstream)
        return f"vLLM issue {number.group(1)}" if number else self.upstream

    def covers(self, op: str, implementation: str, case_fields: Mapping[str, Any]) -> bool:
        """Whether a case of `op` written by `implementation` lies inside this defect's predicate (False where
        the fields cannot say: a missing or unexpected field)."""
        if op != self.op or implementation != self.implementation:
            return False
        try:
            return bool(self.applies(case_fields))
        except (KeyError, TypeError, ValueError):
            return False

    def note(self, vllm_version: str | None) -> str:
        """How `vllm_version` relates to the releases measured affected: '' inside them (or unknown),
        'still present in 0.35.0, last measured 0.34.0' after them, 'also in 0.19.0, first measured 0.20.0'
        before them."""
        v = release(vllm_version)
        if v is None:
            return ""
        if v > release(self.last_seen):
            return f"still present in {vllm_version}, last measured {self.last_seen}"
        if v < release(self.first_seen):
            return f"also in {vllm_version}, first measured {self.first_seen}"
        return ""

    def fixed_note(self, vllm_version: str | None) -> str:
        """For a case inside the predicate that passed: '' after the releases measured affected, else a warning
        that the predicate may be too wide (a release listed as affected passed)."""
        v = release(vllm_version)
        if v is None or not release(self.first_seen) <= v <= release(self.last_seen):
            return ""
        listed = self.first_seen if self.first_seen == self.last_seen else f"{self.first_seen}-{self.last_seen}"
        return f"listed as affected in {listed}: check its scope in kvbench.defects"


def release(version: str | None) -> tuple[int, ...] | None:
    """'0.35.0.dev42+g1a2b3c4' -> (0, 35, 0): the release numbers a version starts with (None if it has none)."""
    found = re.match(r"\d+(\.\d+)*", version or "")
    return tuple(int(p) for p in found.group(0).split(".")) if found else None


def _paged_chunks_over_512(c: Mapping[str, Any]) -> bool:
    """More than 512 16-byte chunks in a token's key: x = 16 bytes / cache element size (1 for fp8 caches)."""
    if c["layout"] not in ("paged", "paged-iv"):
        return False
    size = ELEMENT_BYTES[c["dtype"]] if c["kv_cache_dtype"] == "auto" else 1
    x = 16 // size
    return c["num_heads"] * c["head_size"] > PAGED_THREADS * x


DEFECTS: tuple[Defect, ...] = (
    Defect(
        id="reshape-and-cache-512-chunks",
        title="reshape_and_cache writes only the first 512 16-byte chunks of a token",
        op="kv", implementation="vllm", applies=_paged_chunks_over_512,
        scope="layouts paged and paged-iv, num_heads * head_size / x > 512 (x = 16 bytes / cache element size)",
        message=r"key cache \d+\.\d% written \(expected 100%\): heads \d+\u2013\d+ of \d+ never written",
        first_seen="0.20.0", last_seen="0.34.0",
        measured="0.20.0, 0.31.0, 0.32.0, 0.33.0 and 0.34.0 (vLLM's own kernels from its wheels, H200, with this "
                 "message); the paged op failed at 128 x 128 in each of the 15 minor releases 0.20.0-0.34.0 on an "
                 "H100 (2026-12-05 history, messages not kept)",
    ),
    Defect(
        id="triton-flash-e5m2-as-e4m3",
        title="vLLM's Triton flash op asked for fp8_e5m2 stores e4m3 bytes",
        op="kv", implementation="vllm-triton", applies=lambda c: c["kv_cache_dtype"] == "fp8_e5m2",
        scope="kv_cache_dtype fp8_e5m2, every layout and input dtype",
        message=r"the bytes are e4m3, not e5m2",
        first_seen="0.33.0", last_seen="0.33.0",
        measured="0.33.0 (H200); assumed in 0.34.0 (the op's file is the same) and earlier releases (the kernel "
                 "body is unchanged from 0.20.0), not measured there",
        upstream="https://github.com/vllm-project/vllm/issues/54341",
    ),
    Defect(
        id="ds-mla-fp16-amax",
        title="concat_and_cache_mla with fp8_ds_mla takes fp16 tiles' amax from the raw 16-bit patterns",
        op="mla", implementation="vllm",
        applies=lambda c: c["kv_cache_dtype"] == "fp8_ds_mla" and c["dtype"] == "half",
        scope="kv_cache_dtype fp8_ds_mla with half (fp16) input; bfloat16 is bit-exact",
        message=r"kv cache: \d+ of \d+ elements differ from the reference",
        first_seen="0.33.0", last_seen="0.33.0", measured="0.33.0 (H200)",
    ),
    Defect(
        id="indexer-fp16-fp32-input",
        title="indexer_k_quant_and_cache stores wrong codes and scales for fp16 (amax from raw bits) and float32 "
              "(read as pairs) input",
        op="indexer", implementation="vllm", applies=lambda c: c["dtype"] in ("half", "float"),
        scope="half and float input, every scale format and block size; bfloat16 is bit-exact",
        message=r"indexer (codes|scales)(: \d+ of \d+ elements differ from the reference| \d+\.\d% written)",
        first_seen="0.33.0", last_seen="0.33.0", measured="0.33.0 (H200)",
    ),
)

BY_ID = {d.id: d for d in DEFECTS}


def applying(op: str, implementation: str, case_fields: Mapping[str, Any],
             defects: tuple[Defect, ...] = DEFECTS) -> Defect | None:
    """The defect whose predicate covers this case, if any (the case should fail with its message)."""
    return next((d for d in defects if d.covers(op, implementation, case_fields)), None)


def match(op: str, implementation: str, vllm_version: str | None, case_fields: Mapping[str, Any],
          message: str | None, defects: tuple[Defect, ...] = DEFECTS) -> Defect | None:
    """The known defect a failure is: op, implementation, case predicate and message all match; None for a new
    failure. `vllm_version` does not decide: every release shows a listed defect until a measurement says
    otherwise (Defect.note says how the version relates to the releases measured)."""
    return next((d for d in defects if d.covers(op, implementation, case_fields)
                 and re.search(d.message, message or "")), None)


def fixed(op: str, implementation: str, vllm_version: str | None, case_fields: Mapping[str, Any], status_ok: bool,
          defects: tuple[Defect, ...] = DEFECTS) -> Defect | None:
    """The known defect a passing case shows no more ('fixed in <vllm_version>'), or None (Defect.fixed_note
    warns when `vllm_version` is one of the releases measured affected)."""
    return applying(op, implementation, case_fields, defects) if status_ok else None


def annotate(op: str, implementation: str, case_fields: Mapping[str, Any], status: str,
             message: str | None) -> dict[str, str]:
    """What a state-log entry or a stored record says about vLLM: always the installed vLLM's "vllm_version" (None
    without one; a history of releases tells its runs apart by it), and "known_defect": id for a failure that is
    one, "fixed_defect": id for a passing case inside a defect's predicate."""
    version = vllm_version()
    if status == "failed":
        found = match(op, implementation, version, case_fields, message)
        key = "known_defect"
    else:
        found = fixed(op, implementation, version, case_fields, status == "ok")
        key = "fixed_defect"
    return {"vllm_version": version, **({key: found.id} if found else {})}


def annotate_case(case, implementation: str, status: str, message: str | None) -> dict[str, str]:
    """`annotate` for a case object (kvbench.ops.<op>.Case)."""
    return annotate(case.OP, implementation, dataclasses.asdict(case), status, message)


def of_result(op: str, result) -> Defect | None:
    """The known defect a failed sweep row (kvbench.runner.Result of `op`) is, or None."""
    if result.status != "failed":
        return None
    return match(op, result.implementation, vllm_version(), result.case, result.message)


def verdict(op: str, results) -> tuple[int, list[str]]:
    """For sweep rows of `op` (kvbench.runner.Result): how many failed other than as a known defect, and a line
    for each known defect that failed ('3 failed as the known vLLM defect ID (vLLM issue N): not counted as new
    failures') and each whose cases passed ('fixed in 0.35.0: ID (4 cases inside its scope passed)')."""
    version = vllm_version()
    new, known, passing = 0, {}, {}
    for r in results:
        found = of_result(op, r)
        if r.status == "failed" and found is None:
            new += 1
        elif found is not None:
            known[found.id] = known.get(found.id, 0) + 1
        elif (now := fixed(op, r.implementation, version, r.case, r.status == "ok")) is not None:
            passing[now.id] = passing.get(now.id, 0) + 1
    lines = []
    for defect_id, n in known.items():
        d = BY_ID[defect_id]
        notes = "; ".join(filter(None, (d.reference, d.note(version))))
        lines.append(f"{n} failed as the known vLLM defect {defect_id} ({notes}): not counted as new failures")
    for defect_id, n in passing.items():
        notes = "; ".join(filter(None, (f"{n} case{'s' if n != 1 else ''} inside its scope passed",
                                        BY_ID[defect_id].fixed_note(version))))
        lines.append(f"fixed in {version or 'an unknown vLLM version'}: {defect_id} ({notes})")
    return new, lines
