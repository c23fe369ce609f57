"""Writers that are wrong only after their first call, or that change their inputs: the CLI reports them failed,
the asv suite records them failed (not timed), and the main job still publishes its site. The writers are
registered through KVBENCH_PLUGINS (tests/broken_writers.py), as any out-of-tree implementation would be."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from kvbench import cli, impls, ops, runner
from kvbench.errors import VerificationError
from kvbench.runner import make_case, prepare

ROOT = pathlib.Path(__file__).resolve().parents[1]
HERE = pathlib.Path(__file__).resolve().parent
SMALL = ["--device", "cpu", "--num-heads", "4", "--num-blocks", "64", "--iters", "3", "--num-tokens", "16"]


@pytest.fixture(scope="module", autouse=True)
def broken_writers():
    sys.path.insert(0, str(HERE))
    import broken_writers  # noqa: F401  (registers them)

    yield
    sys.path.remove(str(HERE))


def test_a_writer_that_stops_after_its_first_call_passes_preparation_but_not_the_timed_path():
    p = prepare(make_case("first-call-only", num_tokens=16, num_heads=4, num_blocks=64, device="cpu"),
                "first-call-only")
    assert p.verified.method == "bit-exact"  # its first call was right
    p.sampler("no_graph").measure(2)
    with pytest.raises(VerificationError) as exc:
        p.check_timed("no_graph")
    message = str(exc.value)
    assert message.startswith("first-call-only: key cache 0.0% written (expected 100%): nothing written")
    assert "[timed path, no_graph;" in message


def test_a_writer_that_zeroes_its_inputs_fails_naming_them():
    with pytest.raises(VerificationError, match=r"^zeroes-inputs: changed its inputs while writing \(key\)"):
        prepare(make_case("zeroes-inputs", num_tokens=16, num_heads=4, num_blocks=64, device="cpu"), "zeroes-inputs")


def test_the_cli_reports_both_failed_and_still_measures_the_reference(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc = cli.main(["sweep", *SMALL, "--implementation", "torch", "first-call-only", "zeroes-inputs",
                   "--json", str(out)])
    assert rc == 1
    rows = {r["implementation"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["torch"]["status"] == "ok" and rows["torch"]["latency_us"] > 0
    for name in ("first-call-only", "zeroes-inputs"):
        assert rows[name]["status"] == "failed" and rows[name]["latency_us"] is None
    assert "nothing written at the mapped slots" in rows["first-call-only"]["message"]
    out, err = capsys.readouterr()
    assert "FAILED" in out
    assert "known vLLM defect" not in out + err  # kvbench.defects lists vLLM's, never these writers'


@pytest.mark.slow
def test_the_main_job_records_failures_publishes_and_then_exits_non_zero(tmp_path):
    """bench.sh in a clone, with the wrong writers in the grid: asv records them failed (null, not a time), the
    site is published anyway, the summary names the reasons, and the exit status says something new failed (1:
    none of them is a known vLLM defect, kvbench.defects)."""
    work = tmp_path / "kvbench"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    env = {**os.environ, "KVBENCH_SKIP_SETUP": "1", "HOME": str(tmp_path), "KVBENCH_PLUGINS": "broken_writers",
           "PYTHONPATH": str(HERE), "ASV_PYTHONPATH": str(HERE), "KVBENCH_DEVICE": "cpu",
           "KVBENCH_IMPLEMENTATIONS": "torch,first-call-only,zeroes-inputs", "KVBENCH_NUM_TOKENS": "16",
           "KVBENCH_DTYPES": "bfloat16", "KVBENCH_NUM_BLOCKS": "64",
           "PATH": f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}"}
    run = subprocess.run(["bash", "scripts/bench.sh", "-b", r"KVCacheWrite\.time_no_graph"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]  # the summary's code for a new failure
    assert (work / ".asv/html/index.html").exists()
    assert "asv run: 2 ran, 0 skipped, 4 failed" in run.stdout
    # the summary's reasons come from the state log, one line per benchmark process
    assert re.search(r"^  failed x2: first-call-only: key cache 0\.0% written .*nothing written at the mapped slots",
                     run.stdout, re.M), run.stdout[-3000:]
    assert re.search(r"^  failed x2: zeroes-inputs: changed its inputs while writing \(key\)$", run.stdout, re.M)
    log = [json.loads(line) for line in (work / ".asv/run-log.jsonl").read_text().splitlines()]
    assert len(log) == 6 and not any("known_defect" in e or "fixed_defect" in e for e in log)
    result = next(p for p in (work / ".asv/results").glob("*/*.json") if p.name != "machine.json")
    data = json.loads(result.read_text())
    row = dict(zip(data["result_columns"], data["results"]["benchmarks.KVCacheWrite.time_no_graph"]))
    implementations = [p.strip("'") for p in row["params"][3]]
    values = dict(zip([(kv, impl) for kv in ("auto", "fp8") for impl in implementations], row["result"]))
    assert all(values[(kv, "torch")] > 0 for kv in ("auto", "fp8"))
    assert all(values[(kv, impl)] is None for kv in ("auto", "fp8") for impl in implementations if impl != "torch")


def test_plugins_are_registered_and_a_missing_plugin_module_is_one_line():
    assert {"first-call-only", "zeroes-inputs"} <= set(impls.names())
    env = {**os.environ, "KVBENCH_PLUGINS": "no_such_module"}
    run = subprocess.run([sys.executable, "-m", "kvbench.cli", "info", "--device", "cpu"], env=env,
                         capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("kvbench: error: KVBENCH_PLUGINS: module 'no_such_module'")


def test_a_case_the_gpu_memory_cannot_hold_is_a_skip_not_a_failure(monkeypatch):
    """An out-of-memory error the size estimate missed (a limit of the machine) is reported as a skip with its
    reason, and the sweep goes on."""
    import torch

    from kvbench import runner

    def too_big(case, implementation, mode=None, verify_now=True):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB. GPU 0 has 79 GiB")

    monkeypatch.setattr(runner, "prepare", too_big)
    case = make_case("torch", num_tokens=4, num_blocks=8, device="cpu")
    result = runner.run_case(case, "torch", "no_graph", 3, None)
    assert result.status == "skipped"
    assert result.message == "torch: does not fit in this GPU's memory (CUDA out of memory)"


@pytest.mark.parametrize("op", list(ops.OPS))
def test_run_case_measures_every_op_with_its_reference(op):
    """The path the sweeps and the asv batches take (runner.run_case: prepare, samples, the timed path verified)
    gives a number for the torch reference of every op, stateful ones included (mla-rope rotates its inputs)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(ops.get(op).Case)}
    case = runner.make_case("torch", op=op, num_tokens=16, device="cpu",
                            **({"num_blocks": 64} if "num_blocks" in fields else {}))
    result = runner.run_case(case, "torch", "no_graph", 3, None)
    assert (result.status, result.message) == ("ok", None)
    assert result.latency_us > 0 and result.verified


@pytest.mark.parametrize("writer", ["first-call-only", "zeroes-inputs"])
def test_run_case_fails_a_writer_wrong_from_its_second_call(writer):
    """run_case leaves the eager check out: the timed path's check before the samples fails these writers."""
    case = make_case(writer, num_tokens=16, num_heads=4, num_blocks=64, device="cpu")
    result = runner.run_case(case, writer, "no_graph", 10, None)
    assert result.status == "failed" and result.latency_us is None, result
    assert "[timed path, no_graph;" in result.message, result.message


@pytest.mark.parametrize("writer, says", [("late-idle", "nothing written at the mapped slots"),
                                          ("late-zeroes-inputs", "changed its inputs while writing (key)")])
def test_run_case_rechecks_after_the_samples(writer, says, monkeypatch):
    """A writer that passes the timed path's check before the samples and goes idle, or starts changing its
    inputs, right after it: the re-check after the samples fails it, never a number."""
    import broken_writers

    verify_timed = runner.Prepared._verify_timed

    def then_arm(self, mode, run_once, whole=True):
        verified = verify_timed(self, mode, run_once, whole)
        broken_writers.LATE["armed"] = True  # after the whole check before the samples
        return verified

    monkeypatch.setitem(broken_writers.LATE, "armed", False)
    monkeypatch.setattr(runner.Prepared, "_verify_timed", then_arm)
    case = make_case(writer, num_tokens=16, num_heads=4, num_blocks=64, device="cpu")
    result = runner.run_case(case, writer, "no_graph", 10, None)
    assert result.status == "failed" and result.latency_us is None, result
    assert says in result.message and "[after the samples, no_graph;" in result.message, result.message


@pytest.mark.parametrize("op", ["kv", "mla", "indexer", "token-head-quant", "mla-grouped"])
def test_run_case_measures_a_cold_l2_rotation_of_every_op_that_has_one(op, monkeypatch):
    """A cold-L2 case rotates through many input sets sharing one cache; the checks count an op's outputs as it
    declares them (the indexer's codes and scales share one tensor: this failed before 2026-12-05)."""
    l2 = (512 << 10) if op == "indexer" else (2 << 20)  # small sets, a rotation 4x the L2, in a small cache
    monkeypatch.setattr(runner, "l2_bytes", lambda device: l2)
    case = runner.make_case("torch", op=op, num_tokens=16, device="cpu", l2="cold", num_blocks=128)
    # a rotation; the indexer's has more sets than the checks compare one by one (the others are checked written)
    assert runner.rotation_size(case) > (64 if op == "indexer" else 1)
    result = runner.run_case(case, "torch", "no_graph", 3, None)
    assert (result.status, result.message) == ("ok", None)
