"""Known vLLM defects (kvbench.defects) told apart from new failures: the matching rules, "still present" and
"fixed in" reporting, `kvbench sweep`'s rows and exit code, `kvbench asv-summary`'s counts, lines and exit code,
and scripts/bench.sh's verdict after a real asv run.

There is no GPU here, so vLLM's defects are reproduced by stand-in writers registered under vLLM's implementation
names (as KVBENCH_PLUGINS would register any writer): `vllm` writing only the first 512 16-byte chunks of each token
as vLLM's paged kernel does, `vllm-triton` storing e4m3 bytes when asked for e5m2. Their failures go through the
real verifier and the real (production) list of defects."""

import dataclasses
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time

import pytest

from kvbench import cli, defects, impls
from kvbench.errors import VerificationError
from kvbench.impls.torch_ref import TorchReference
from kvbench.ops.kv import reference_write
from kvbench.runner import make_case, prepare

ROOT = pathlib.Path(__file__).resolve().parents[1]
HERE = pathlib.Path(__file__).resolve().parent
PAGED = defects.BY_ID["reshape-and-cache-512-chunks"]
E5M2 = defects.BY_ID["triton-flash-e5m2-as-e4m3"]
DS_MLA = defects.BY_ID["ds-mla-fp16-amax"]
INDEXER = defects.BY_ID["indexer-fp16-fp32-input"]
PAGED_MESSAGE = ("vllm: key cache 25.0% written (expected 100%): heads 32\u2013127 of 128 never written (in every "
                 "token) [kv: 16 tokens, ...; input seed 1]")


# --- stand-ins for vLLM's writers (CPU) ------------------------------------------------------------------------


class PagedStandIn(TorchReference):
    """Stands in for vLLM's `reshape_and_cache` (paged layout): like its kernel (one thread per 16-byte chunk of a
    token, at most 512 threads, no loop) it writes only the first 512 chunks of each token's key and value. With
    `fixed`, it writes everything: a release that fixed the defect."""

    name = "vllm"
    devices = ("cpu",)
    layouts = ("paged",)
    fixed = False

    def bind(self, w):
        c = w.case

        def run():  # the reference into copies of the caches, then the chunks the kernel writes copied back
            key, value = w.key_cache.clone(), w.value_cache.clone()
            reference_write(c, w.key, w.value, key, value, w.slot_mapping, w.k_scale, w.v_scale)
            x, blocks = w.key_cache.shape[-1], w.key_cache.shape[0]
            chunks = c.num_heads * c.head_size // x if self.fixed else defects.PAGED_THREADS
            # key [blocks, heads, head_size / x, slots, x]: a token's chunk i is row i of [blocks, chunks, slots, x]
            w.key_cache.view(blocks, -1, c.block_size, x)[:, :chunks] = key.view(blocks, -1, c.block_size, x)[
                :, :chunks]
            # value [blocks, heads, head_size, slots]: chunk i is elements i * x ... i * x + x - 1 of a token
            w.value_cache.view(blocks, -1, c.block_size)[:, : chunks * x] = value.view(blocks, -1, c.block_size)[
                :, : chunks * x]

        return run


class TritonE5m2StandIn(TorchReference):
    """Stands in for vLLM's Triton flash op: asked for fp8_e5m2, it stores e4m3 codes (vLLM issue 54341)."""

    name = "vllm-triton"
    devices = ("cpu",)
    layouts = ("nhd", "hnd")

    def bind(self, w):
        c = w.case
        stored = dataclasses.replace(c, kv_cache_dtype="fp8_e4m3") if c.kv_cache_dtype == "fp8_e5m2" else c
        return lambda: reference_write(stored, w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping,
                                       w.k_scale, w.v_scale)


def register_stand_ins(paged_fixed: bool = False) -> None:
    """What the plugin module of the asv runs below calls (KVBENCH_PLUGINS)."""
    paged = PagedStandIn()
    paged.fixed = paged_fixed
    impls.register(paged)
    impls.register(TritonE5m2StandIn())


@pytest.fixture
def stand_ins():
    """The stand-ins registered under vLLM's names in this process, the real implementations put back after."""
    saved = dict(impls.REGISTRY["kv"])
    register_stand_ins()
    yield impls.REGISTRY["kv"]
    impls.REGISTRY["kv"].clear()
    impls.REGISTRY["kv"].update(saved)


def fields(implementation="vllm", op="kv", **kw) -> dict:
    return dataclasses.asdict(make_case(implementation, op=op, num_tokens=16, num_blocks=64, device="cpu", **kw))


def failure_of(case, implementation: str) -> str:
    with pytest.raises(VerificationError) as exc:
        prepare(case, implementation)
    return str(exc.value)


# --- the list ---------------------------------------------------------------------------------------------------


def test_the_list_is_well_formed():
    assert len(defects.BY_ID) == len(defects.DEFECTS) == 4
    for d in defects.DEFECTS:
        re.compile(d.message)
        assert impls.get(d.implementation, d.op)  # a registered implementation of a real op
        assert defects.release(d.first_seen) <= defects.release(d.last_seen)
        assert d.open and d.measured and d.scope
        assert d.reference == ("vLLM issue 54341" if d is E5M2 else "no upstream issue found")
    assert E5M2.upstream == "https://github.com/vllm-project/vllm/issues/54341"


@pytest.mark.parametrize("heads, head_size, dtype, kv, inside", [
    (128, 128, "bfloat16", "auto", True),  # 2048 chunks of 8 elements: 25 % written
    (128, 128, "bfloat16", "fp8", True),  # 1024 chunks of 16: 50 %
    (64, 128, "half", "auto", True),  # 1024: 50 %
    (64, 128, "bfloat16", "fp8_e5m2", False),  # 512 chunks: all written
    (32, 128, "bfloat16", "auto", False),  # 512
    (32, 128, "float", "auto", True),  # 1024 chunks of 4 elements
    (64, 256, "bfloat16", "auto", True),
    (32, 192, "bfloat16", "auto", True),  # 768
])
@pytest.mark.parametrize("layout", ["paged", "paged-iv"])
def test_the_paged_defects_predicate_is_more_than_512_chunks(heads, head_size, dtype, kv, inside, layout):
    c = fields(num_heads=heads, head_size=head_size, dtype=dtype, kv_cache_dtype=kv, layout=layout)
    assert (defects.applying("kv", "vllm", c) is PAGED) == inside
    assert (defects.match("kv", "vllm", "0.33.0", c, PAGED_MESSAGE) is PAGED) == inside


def test_a_failure_is_known_only_when_implementation_op_predicate_and_message_match():
    inside = fields(layout="paged")
    assert defects.match("kv", "vllm", "0.33.0", inside, PAGED_MESSAGE) is PAGED
    # the same message from another implementation (kvbench's own paged kernel) is a new failure
    assert defects.match("kv", "triton", "0.33.0", inside, PAGED_MESSAGE.replace("vllm:", "triton:")) is None
    assert defects.match("mla", "vllm", "0.33.0", inside, PAGED_MESSAGE) is None  # another op
    # a case outside the predicate: 32 heads are written in full, so the same message there is new
    assert defects.match("kv", "vllm", "0.33.0", fields(layout="paged", num_heads=32), PAGED_MESSAGE) is None
    # inside the predicate, another failure is new
    for message in ("vllm: changed its inputs while writing (key)", "vllm: key cache 0.0% written (expected "
                    "100%): nothing written at the mapped slots", "vllm: RuntimeError: CUDA error", "", None):
        assert defects.match("kv", "vllm", "0.33.0", inside, message) is None
    # a case the fields cannot describe (a row whose process died) is no defect's
    assert defects.match("kv", "vllm", "0.33.0", {"num_tokens": 16}, PAGED_MESSAGE) is None


def test_the_other_defects_match_their_scope_only():
    e5m2 = "vllm-triton: key cache: 3000 of 4096 elements differ from the reference (first at ...); the bytes are " \
           "e4m3, not e5m2 (100.0% match an e4m3 reference)"
    assert defects.match("kv", "vllm-triton", "0.33.0", fields("torch", kv_cache_dtype="fp8_e5m2"), e5m2) is E5M2
    assert defects.match("kv", "vllm-triton", "0.33.0", fields("torch", kv_cache_dtype="fp8"), e5m2) is None
    assert defects.match("kv", "vllm-flash", "0.33.0", fields("torch", kv_cache_dtype="fp8_e5m2"), e5m2) is None
    ds = "vllm: kv cache: 812 of 656000 elements differ from the reference (first at token 3, byte 17: got 3, " \
         "expected 5)"
    half = fields("torch", "mla", kv_cache_dtype="fp8_ds_mla", dtype="half")
    assert defects.match("mla", "vllm", "0.33.0", half, ds) is DS_MLA
    assert defects.match("mla", "vllm", "0.33.0", dict(half, dtype="bfloat16"), ds) is None
    assert defects.match("mla", "vllm", "0.33.0", dict(half, kv_cache_dtype="fp8"), ds) is None
    for dtype, known in (("half", True), ("float", True), ("bfloat16", False)):
        case = fields("torch", "indexer", dtype=dtype)
        for message in ("vllm: indexer codes: 12 of 2048 elements differ from the reference (first at ...)",
                        "vllm: indexer scales: 3 of 64 elements differ from the reference (first at ...)",
                        "vllm: indexer codes 99.2% written (expected 100%)"):
            assert (defects.match("indexer", "vllm", "0.33.0", case, message) is INDEXER) == known
        assert defects.match("indexer", "vllm", "0.33.0", case, "vllm: changed its inputs while writing (k)") is None


def test_versions_say_still_present_or_fixed_in():
    assert PAGED.note("0.33.0") == PAGED.note("0.34.0") == PAGED.note(None) == PAGED.note("garbage") == ""
    assert PAGED.note("0.35.0") == "still present in 0.35.0, last measured 0.34.0"
    assert PAGED.note("0.35.0.dev42+g1a2b3c4") == "still present in 0.35.0.dev42+g1a2b3c4, last measured 0.34.0"
    assert PAGED.note("0.19.1") == "also in 0.19.1, first measured 0.20.0"
    assert E5M2.note("0.34.0") == "still present in 0.34.0, last measured 0.33.0"
    # a newer release does not make a matching failure new
    assert defects.match("kv", "vllm", "0.40.0", fields(layout="paged"), PAGED_MESSAGE) is PAGED
    inside, outside = fields(layout="paged"), fields(layout="paged", num_heads=32)
    assert defects.fixed("kv", "vllm", "0.35.0", inside, True) is PAGED
    assert defects.fixed("kv", "vllm", "0.35.0", inside, False) is None
    assert defects.fixed("kv", "vllm", "0.35.0", outside, True) is None
    assert defects.fixed("kv", "torch", "0.35.0", inside, True) is None
    assert PAGED.fixed_note("0.35.0") == ""
    assert PAGED.fixed_note("0.33.0") == "listed as affected in 0.20.0-0.34.0: check its scope in kvbench.defects"


def test_annotations_for_the_state_log(monkeypatch):
    monkeypatch.setattr(defects, "vllm_version", lambda: "0.35.0")
    inside = fields(layout="paged")
    assert defects.annotate("kv", "vllm", inside, "failed", PAGED_MESSAGE) == {
        "known_defect": PAGED.id, "vllm_version": "0.35.0"}
    assert defects.annotate("kv", "vllm", inside, "ok", None) == {"fixed_defect": PAGED.id, "vllm_version": "0.35.0"}
    plain = {"vllm_version": "0.35.0"}  # the version always; a history of releases tells its runs apart by it
    assert defects.annotate("kv", "vllm", inside, "failed", "vllm: crashed") == plain
    assert defects.annotate("kv", "vllm", inside, "skipped", "vllm: runs on cuda only, not cpu") == plain
    assert defects.annotate("kv", "torch", inside, "ok", None) == plain


# --- the stand-ins through the real verifier --------------------------------------------------------------------


@pytest.mark.parametrize("heads, head_size, kv, expected", [
    (128, 128, "auto", "key cache 25.0% written (expected 100%): heads 32\u2013127 of 128 never written"),
    (128, 128, "fp8", "key cache 50.0% written (expected 100%): heads 64\u2013127 of 128 never written"),
    (64, 128, "auto", "key cache 50.0% written (expected 100%): heads 32\u201363 of 64 never written"),
    (64, 256, "auto", "key cache 25.0% written (expected 100%): heads 16\u201363 of 64 never written"),
])
def test_the_paged_stand_in_fails_with_vllms_message_and_is_known(stand_ins, heads, head_size, kv, expected):
    case = make_case("vllm", num_tokens=16, num_blocks=64, device="cpu", num_heads=heads, head_size=head_size,
                     kv_cache_dtype=kv)
    message = failure_of(case, "vllm")
    assert expected in message
    assert defects.match("kv", "vllm", defects.vllm_version(), dataclasses.asdict(case), message) is PAGED


def test_the_paged_stand_in_writes_everything_at_32_heads_and_when_fixed(stand_ins):
    case = make_case("vllm", num_tokens=16, num_blocks=64, device="cpu", num_heads=32)
    assert prepare(case, "vllm").verified.method == "bit-exact"  # 512 chunks: all of them
    stand_ins["vllm"].fixed = True
    assert prepare(make_case("vllm", num_tokens=16, num_blocks=64, device="cpu"), "vllm").verified.method == \
        "bit-exact"


def test_the_e5m2_stand_in_is_known_and_its_e4m3_is_not_a_defect(stand_ins):
    case = make_case("vllm-triton", num_tokens=16, num_blocks=64, device="cpu", num_heads=4,
                     kv_cache_dtype="fp8_e5m2")
    message = failure_of(case, "vllm-triton")
    assert "the bytes are e4m3, not e5m2" in message
    assert defects.match("kv", "vllm-triton", "0.33.0", dataclasses.asdict(case), message) is E5M2
    e4m3 = make_case("vllm-triton", num_tokens=16, num_blocks=64, device="cpu", num_heads=4, kv_cache_dtype="fp8")
    assert prepare(e4m3, "vllm-triton").verified.method == "bit-exact"


# --- kvbench sweep ----------------------------------------------------------------------------------------------

SWEEP = ["sweep", "--device", "cpu", "--num-blocks", "64", "--iters", "3", "--num-tokens", "16"]


def test_sweep_marks_a_known_defect_and_exits_0(stand_ins, capsys):
    assert cli.main([*SWEEP, "--implementation", "vllm", "torch"]) == 0
    out, err = capsys.readouterr()
    assert statuses(out) == ["FAILED (known vLLM defect reshape-and-cache-512-chunks, no upstream issue found)"]
    assert "key cache 25.0% written" in out
    assert "kvbench: 1 failed as the known vLLM defect reshape-and-cache-512-chunks (no upstream issue found): " \
           "not counted as new failures" in err.splitlines()
    assert cli.main([*SWEEP, "--implementation", "vllm-triton", "--kv-cache-dtype", "fp8_e5m2",
                     "--num-heads", "4"]) == 0
    out, err = capsys.readouterr()
    assert "FAILED (known vLLM defect triton-flash-e5m2-as-e4m3, vLLM issue 54341)" in out
    assert "the bytes are e4m3, not e5m2" in out


def test_sweep_exits_1_for_a_new_failure_next_to_a_known_one(stand_ins, capsys):
    """The paged stand-in under vLLM's name, and the same writer under a name outside the defect's scope: the
    same message, but only vLLM's is the known defect; the other is a new failure."""
    other = PagedStandIn()
    other.name = "paged-512"
    impls.register(other)
    assert cli.main([*SWEEP, "--implementation", "vllm", "paged-512"]) == 1
    out, err = capsys.readouterr()
    assert statuses(out) == ["FAILED (known vLLM defect reshape-and-cache-512-chunks, no upstream issue found)",
                             "FAILED"]
    assert out.count("key cache 25.0% written (expected 100%): heads 32\u2013127 of 128 never written") == 2
    assert "kvbench: 1 failed as the known vLLM defect reshape-and-cache-512-chunks" in err
    assert cli.main([*SWEEP, "--implementation", "paged-512"]) == 1
    out, err = capsys.readouterr()
    assert statuses(out) == ["FAILED"] and "known vLLM defect" not in out + err


def statuses(out: str) -> list[str]:
    """The status cells (the latency column) of the sweep tables' rows that have no number."""
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| 16 ")]
    return [row[1] for row in cells if row[1].startswith(("FAILED", "SKIPPED"))]


def test_sweep_says_fixed_in_when_a_case_inside_a_defect_passes(stand_ins, capsys):
    stand_ins["vllm"].fixed = True
    assert cli.main([*SWEEP, "--implementation", "vllm"]) == 0
    err = capsys.readouterr().err
    version = defects.vllm_version() or "an unknown vLLM version"
    assert f"kvbench: fixed in {version}: reshape-and-cache-512-chunks (1 case inside its scope passed" in err


# --- kvbench asv-summary on a hand-made result file and state log ----------------------------------------------


def result_file(path: pathlib.Path, ran: int, skipped: int, failed: int) -> str:
    """An asv result file (asv 0.6's layout) of one benchmark started now: `ran` times, `skipped` NaNs and `failed`
    nulls over one parameter."""
    values = [1e-6] * ran + [float("nan")] * skipped + [None] * failed
    columns = ["result", "params", "version", "started_at", "duration", "samples"]
    results = {"benchmarks.KVCacheWrite.time_no_graph": [values, [[str(i) for i in range(len(values))]], "v1",
                                                         int(time.time() * 1000), 1.5, None]}
    path.write_text(json.dumps({"commit_hash": "0" * 40, "result_columns": columns, "results": results}))
    return str(path)


def state_log(path: pathlib.Path, entries: list[dict]) -> str:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return str(path)


PAGED_25 = "vllm: key cache 25.0% written (expected 100%): heads 32\u2013127 of 128 never written (in every token)"
PAGED_50 = "vllm: key cache 50.0% written (expected 100%): heads 64\u2013127 of 128 never written (in every token)"


def known(reason: str, defect: str = PAGED.id, version: str | None = "0.33.0", seed: int = 1) -> dict:
    return {"status": "failed", "reason": f"{reason} [kv: ...; input seed {seed}]", "known_defect": defect,
            "vllm_version": version}


def summary(capsys, *argv) -> tuple[int, list[str]]:
    code = cli.main(["asv-summary", *argv])
    return code, capsys.readouterr().out.splitlines()


def test_summary_counts_known_defects_apart_and_exits_0(tmp_path, capsys):
    log = state_log(tmp_path / "log", [known(PAGED_25, seed=1), known(PAGED_25, seed=2), known(PAGED_50),
                                       {"status": "ok", "reason": None}, {"status": "skipped", "reason": "why"}])
    code, lines = summary(capsys, result_file(tmp_path / "r.json", 1, 1, 3), "--state-log", log)
    assert code == 0
    assert lines == ["asv run: 1 ran, 1 skipped, 3 failed (3 known vLLM defects, 0 new)",
                     f"  known x2: reshape-and-cache-512-chunks: {PAGED_25} (no upstream issue found)",
                     f"  known x1: reshape-and-cache-512-chunks: {PAGED_50} (no upstream issue found)",
                     "  skipped x1: why"]


def test_summary_exits_1_for_a_new_failure_among_known_ones(tmp_path, capsys):
    e5m2 = "vllm-triton: key cache: 9 of 9 elements differ from the reference; the bytes are e4m3, not e5m2"
    log = state_log(tmp_path / "log", [known(PAGED_25), known(e5m2, E5M2.id, "0.34.0"),
                                       {"status": "failed", "reason": "writer: wrong [timed path; seed 1]"},
                                       {"status": "failed", "reason": "writer: wrong [timed path; seed 2]"},
                                       # an id that is not in the list is no known defect
                                       {"status": "failed", "reason": "x: y", "known_defect": "no-such-defect"}])
    code, lines = summary(capsys, result_file(tmp_path / "r.json", 0, 0, 5), "--state-log", log)
    assert code == 1
    assert lines == ["asv run: 0 ran, 0 skipped, 5 failed (2 known vLLM defects, 3 new)",
                     f"  known x1: reshape-and-cache-512-chunks: {PAGED_25} (no upstream issue found)",
                     f"  known x1: triton-flash-e5m2-as-e4m3: {e5m2} (vLLM issue 54341; still present in 0.34.0, "
                     "last measured 0.33.0)",
                     "  NEW failed x2: writer: wrong", "  NEW failed x1: x: y"]


def test_summary_counts_a_failure_without_a_log_line_as_new(tmp_path, capsys):
    """asv counted 3 failures, the log explains 2 as known: the third process died before writing its line."""
    log = state_log(tmp_path / "log", [known(PAGED_25), known(PAGED_25)])
    code, lines = summary(capsys, result_file(tmp_path / "r.json", 2, 0, 3), "--state-log", log)
    assert code == 1
    assert lines[0] == "asv run: 2 ran, 0 skipped, 3 failed (2 known vLLM defects, 1 new)"
    assert lines[2].startswith("  NEW failed x1: no line in the state log (the benchmark process ended without")
    # without a state log nothing is known: every failure is new, as before
    code, lines = summary(capsys, result_file(tmp_path / "r.json", 2, 0, 3))
    assert code == 1 and lines == ["asv run: 2 ran, 0 skipped, 3 failed"]


def test_summary_reports_known_defects_that_pass_now(tmp_path, capsys):
    passing = [{"status": "ok", "reason": None, "fixed_defect": PAGED.id, "vllm_version": "0.35.0"}] * 3
    passing += [{"status": "ok", "reason": None, "fixed_defect": INDEXER.id, "vllm_version": "0.33.0"}]
    log = state_log(tmp_path / "log", passing)
    code, lines = summary(capsys, result_file(tmp_path / "r.json", 4, 0, 0), "--state-log", log)
    assert code == 0
    assert lines == ["asv run: 4 ran, 0 skipped, 0 failed",
                     "  fixed in 0.35.0: reshape-and-cache-512-chunks (3 cases now pass)",
                     "  fixed in 0.33.0: indexer-fp16-fp32-input (1 case now passes; listed as affected in "
                     "0.33.0: check its scope in kvbench.defects)"]


def test_summary_still_says_when_nothing_was_measured(tmp_path, capsys):
    log = state_log(tmp_path / "log", [known(PAGED_25)])
    code, lines = summary(capsys, "--since", str(int(time.time())), "--state-log", log)
    assert code == 5 and lines[0].startswith("asv run: this run measured nothing")


# --- scripts/bench.sh: a real asv run -----------------------------------------------------------------------------

PLUGIN = """import os
import test_defects

test_defects.register_stand_ins(paged_fixed=os.environ.get("STAND_IN_FIXED") == "1")
"""


@pytest.fixture
def bench_clone(tmp_path):
    """A clone with this working tree's bench.sh, the stand-ins' plugin, and a tiny grid: KVCacheWrite at 16
    tokens, bf16, auto and fp8, 128 x 128 heads (vLLM's default shape, inside the paged defect's scope)."""
    work = tmp_path / "kvbench"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    shutil.copy(ROOT / "scripts" / "bench.sh", work / "scripts" / "bench.sh")
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "stand_in_plugin.py").write_text(PLUGIN)
    home = tmp_path / "home"
    home.mkdir()
    path = f"{plugins}:{HERE}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVBENCH_")}
    env.update(KVBENCH_SKIP_SETUP="1", KVBENCH_DEVICE="cpu", HOME=str(home), KVBENCH_MACHINE="testbox",
               KVBENCH_CACHE_DIR=str(tmp_path / "cache"), KVBENCH_PLUGINS="stand_in_plugin,broken_writers",
               PYTHONPATH=path, ASV_PYTHONPATH=path, KVBENCH_NUM_TOKENS="16", KVBENCH_DTYPES="bfloat16",
               KVBENCH_NUM_BLOCKS="64", PATH=f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}")

    def bench(**variables) -> tuple[subprocess.CompletedProcess, list[dict]]:
        run = subprocess.run(["bash", "scripts/bench.sh", "-b", r"KVCacheWrite\.time_no_graph"], cwd=work,
                             env={**env, **variables}, capture_output=True, text=True, timeout=900)
        log = [json.loads(line) for line in (work / ".asv/run-log.jsonl").read_text().splitlines()]
        return run, log

    return work, bench


@pytest.mark.slow
def test_bench_sh_is_green_when_only_known_defects_fail(bench_clone):
    """torch and the paged stand-in under vLLM's name, measured in a batch (the store's records carry the
    defect): the stand-in's two cases fail (shown failed in asv's results), the summary lists them as known and
    bench.sh exits 0."""
    work, bench = bench_clone
    run, log = bench(KVBENCH_IMPLEMENTATIONS="torch,vllm", KVBENCH_BATCH="1")
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-3000:]
    assert "asv run: 2 ran, 0 skipped, 2 failed (2 known vLLM defects, 0 new)" in out
    assert f"  known x1: reshape-and-cache-512-chunks: {PAGED_25} (no upstream issue found)" in out.splitlines()
    assert f"  known x1: reshape-and-cache-512-chunks: {PAGED_50} (no upstream issue found)" in out.splitlines()
    assert (work / ".asv/html/index.html").exists()
    failed = [e for e in log if e["status"] == "failed"]
    assert len(failed) == 2 and all(e["known_defect"] == PAGED.id and "batch_pid" in e for e in failed)
    assert all(e["vllm_version"] == defects.vllm_version() for e in failed)
    result = next(p for p in (work / ".asv/results").glob("*/*.json") if p.name != "machine.json")
    data = json.loads(result.read_text())
    row = dict(zip(data["result_columns"], data["results"]["benchmarks.KVCacheWrite.time_no_graph"]))
    assert sum(v is None for v in row["result"]) == 2  # still failed in the results (and on the site)


@pytest.mark.slow
def test_bench_sh_is_red_for_a_new_failure_next_to_known_ones_and_says_fixed_in(bench_clone):
    """The paged stand-in's known defect next to a writer that fails in a new way: exit 1, the new failure
    marked NEW. Then a run where the stand-in writes everything (a release that fixed it) and only the new
    failure is left: still exit 1, and the summary says the defect's cases pass."""
    work, bench = bench_clone
    run, log = bench(KVBENCH_IMPLEMENTATIONS="vllm,first-call-only")
    out = run.stdout
    assert run.returncode == 1, out[-3000:] + run.stderr[-3000:]
    assert "asv run: 0 ran, 0 skipped, 4 failed (2 known vLLM defects, 2 new)" in out
    assert re.search(r"^  NEW failed x2: first-call-only: key cache 0\.0% written .*nothing written", out, re.M), out
    assert sorted(e.get("known_defect", "") for e in log) == ["", "", PAGED.id, PAGED.id]
    run, log = bench(KVBENCH_IMPLEMENTATIONS="vllm,first-call-only", STAND_IN_FIXED="1")
    out = run.stdout
    assert run.returncode == 1, out[-3000:] + run.stderr[-3000:]
    assert "asv run: 2 ran, 0 skipped, 2 failed" in out.splitlines()
    version = defects.vllm_version() or "an unknown vLLM version"
    assert re.search(rf"^  fixed in {re.escape(version)}: reshape-and-cache-512-chunks \(2 cases now pass", out,
                     re.M), out
    assert [e.get("fixed_defect") for e in log if e["status"] == "ok"] == [PAGED.id, PAGED.id]
