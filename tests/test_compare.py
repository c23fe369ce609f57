"""`kvbench compare A B` on a temporary clone of this repository with commits of its own: identical code compares
near 1 and exits 0, a torch reference made three times slower is flagged `+` (exit 1), a wrong one `!`, a bad
revision is one line and exit 2 before any work, a revision without the suite is named as too old, and Ctrl-C ends
with the finished rows, one line, exit 130 and nothing left behind."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from kvbench import cli
from kvbench.compare import report, revisions, session
from kvbench.compare.session import Combination, Outcome, Side

ROOT = pathlib.Path(__file__).resolve().parents[1]
TORCH_REF = "src/kvbench/impls/torch_ref.py"
CALL = ("            reference_write(w.case, w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, w.k_scale, "
        "w.v_scale)\n")
# One small combination: 16 tokens, bf16, auto, torch, 64 blocks (the suite's grid narrowed as for asv).
GRID = {"KVBENCH_DEVICE": "cpu", "KVBENCH_NUM_TOKENS": "16", "KVBENCH_IMPLEMENTATIONS": "torch",
        "KVBENCH_DTYPES": "bfloat16", "KVBENCH_NUM_BLOCKS": "64"}
ONE = r"KVCacheWrite\.time_no_graph\(16, 'bfloat16', 'auto'"


def git(repo, *args) -> str:
    run = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                         capture_output=True, text=True, check=True)
    return run.stdout.strip()


def commit_with(repo, base: str, old: str, new: str, message: str) -> str:
    """A commit on top of HEAD whose torch_ref.py is `base`'s with `old` replaced by `new`."""
    text = git(repo, "show", f"{base}:{TORCH_REF}") + "\n"
    assert old in text
    (repo / TORCH_REF).write_text(text.replace(old, new))
    git(repo, "commit", "-q", "-am", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A clone of this repository's HEAD with: an empty commit (same code), a torch reference doing its work three
    times (still correct), one that also zeroes the whole key cache (wrong), and one without benchmarks/."""
    work = tmp_path_factory.mktemp("compare") / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    shas = {"base": git(work, "rev-parse", "HEAD")}
    git(work, "commit", "-q", "--allow-empty", "-m", "same code")
    shas["same"] = git(work, "rev-parse", "HEAD")
    shas["slow"] = commit_with(work, shas["base"], CALL, CALL * 3, "torch reference three times")
    shas["wrong"] = commit_with(work, shas["base"], CALL, CALL + "            w.key_cache.zero_()\n",
                                "torch reference zeroes the key cache")
    git(work, "rm", "-q", "-r", "benchmarks")
    git(work, "commit", "-q", "-m", "no suite")
    shas["old"] = git(work, "rev-parse", "HEAD")
    git(work, "checkout", "-q", shas["base"])
    return work, shas


@pytest.fixture
def grid(monkeypatch, tmp_path):
    for key, value in GRID.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the comparison's trees go here
    return tmp_path


def compare(repo, *argv) -> list[str]:
    return ["compare", "--repo", str(repo), *argv]


def leftovers(folder) -> list:
    return list(pathlib.Path(folder).glob(f"{revisions.TEMP_PREFIX}*"))


@pytest.mark.slow
def test_identical_code_compares_near_1_and_exits_0(repo, grid, tmp_path, capsys):
    work, shas = repo
    out = tmp_path / "aa.json"
    rc = cli.main(compare(work, shas["base"], shas["same"], "-b", ONE, "--rounds", "4", "--factor", "1.5",
                          "--json", str(out)))
    text, err = capsys.readouterr()
    assert rc == 0, err
    assert "benchmarks.KVCacheWrite.time_no_graph(16, 'bfloat16', 'auto', 'torch', 64)" in text
    assert f"Before [{shas['base'][:8]}]" in text and f"After [{shas['same'][:8]}]" in text
    data = json.loads(out.read_text())
    assert data["a"]["commit"] == shas["base"] and data["done"] == data["planned"] == 1
    (row,) = data["results"]
    assert row["a"]["status"] == row["b"]["status"] == "ok" and row["mark"] == " "
    assert 1 / 1.5 < row["ratio"] < 1.5
    assert len(row["round_ratios"][0]) == 4 and all(len(r) >= 2 for r in row["b"]["samples_s"][0])
    assert len(row["allocation_ratios"]) == len(row["a"]["samples_s"]) == len(row["a"]["calls_per_sample"]) >= 1
    assert row["a"]["mode"] == "no_graph" and min(row["a"]["calls_per_sample"]) >= 1
    workers = data["workers"]
    assert workers["a"]["kvbench"].startswith(str(tmp_path)) and "/a/src/kvbench/" in workers["a"]["kvbench"]
    assert "/b/src/kvbench/" in workers["b"]["kvbench"]
    assert not leftovers(grid)


@pytest.mark.slow
def test_a_slower_torch_reference_is_flagged_and_a_wrong_one_fails(repo, grid, capsys):
    work, shas = repo
    rc = cli.main(compare(work, shas["base"], shas["slow"], "-b", ONE, "--rounds", "3", "--factor", "1.5",
                          "--allocations", "2"))
    text, err = capsys.readouterr()
    assert rc == 1, err
    row = next(line for line in text.splitlines() if "'auto', 'torch', 64)" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "+" and float(cells[3]) > 1.8, row
    assert "1 slower" in text

    rc = cli.main(compare(work, shas["base"], shas["wrong"], "-b", ONE, "--rounds", "2"))
    text, err = capsys.readouterr()
    assert rc == 1
    row = next(line for line in text.splitlines() if "'auto', 'torch', 64)" in line)
    assert row.startswith("| !") and "| failed" in row
    assert "B failed: torch: " in err  # the verifier's reason, in the progress line
    assert not leftovers(grid)


def test_a_bad_revision_is_one_line_before_any_work(repo, grid, capsys):
    work, shas = repo
    start = time.perf_counter()
    assert cli.main(compare(work, "HEAD", "no-such-revision")) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"kvbench: error: revision B 'no-such-revision' is not a commit of {work} (git rev-parse)"
    assert cli.main(compare(grid, "HEAD", "HEAD")) == 2  # not a repository
    assert "is not inside a git repository" in capsys.readouterr().err
    assert time.perf_counter() - start < 5 and not leftovers(grid)


@pytest.mark.slow
def test_a_revision_without_the_suite_is_named_as_too_old(repo, grid, capsys):
    work, shas = repo
    assert cli.main(compare(work, shas["old"], "HEAD")) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"kvbench: error: revision A ({shas['old']}, {shas['old'][:8]}): too old for kvbench compare: "
                   f"it has no benchmarks/benchmarks.py")
    assert not leftovers(grid)


@pytest.mark.slow
def test_ctrl_c_keeps_the_finished_rows_and_leaves_nothing_behind(repo, tmp_path):
    work, shas = repo
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, **GRID, "KVBENCH_NUM_TOKENS": "2,4,8,16,32", "TMPDIR": str(temp)}
    out = tmp_path / "c.json"
    proc = subprocess.Popen([sys.executable, "-m", "kvbench.cli", "compare", "HEAD", "HEAD", "-b",
                             r"KVCacheWrite\.time", "--json", str(out)], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err = []
    for line in proc.stderr:  # wait until the first combination is done
        err.append(line)
        if line.startswith("[1/"):
            break
    proc.send_signal(signal.SIGINT)
    stdout, rest = proc.communicate(timeout=60)
    err += rest.splitlines(keepends=True)
    assert proc.returncode == 130, "".join(err)
    last = err[-1].strip()
    assert last.startswith("kvbench: interrupted (SIGINT) after ") and last.endswith(" of 10 combinations")
    assert "Traceback" not in "".join(err)
    done = int(last.split(" after ")[1].split()[0])
    assert done >= 1 and stdout.count("benchmarks.KVCacheWrite.time_no_graph(") == done
    data = json.loads(out.read_text())
    assert data["interrupted"] == "SIGINT" and len(data["results"]) == done
    assert not leftovers(temp)
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and str(temp).encode() in cmdline(pid)]


def cmdline(pid: str) -> bytes:
    """A process's command line (empty if it has gone meanwhile)."""
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def outcome(a_rounds, b_rounds, a="ok", b="ok", version_b="v1") -> Outcome:
    """One allocation per side, its rounds' samples given (none for a side that did not run)."""
    c = Combination("KVCacheWrite", "time_no_graph", (16, "auto"))
    return Outcome(c, Side(a, allocations=[a_rounds] if a_rounds else [], version="v1"),
                   Side(b, allocations=[b_rounds] if b_rounds else [], version=version_b))


def test_ratio_is_the_median_of_paired_round_ratios_and_marks_follow_asv():
    drifting = outcome([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]], [[1.05, 1.05], [2.1, 2.1], [3.15, 3.15]])
    assert drifting.ratio == pytest.approx(1.05)
    assert report.mark(drifting, 1.10)[0] == " " and report.mark(drifting, 1.04)[0] == "+"
    assert report.mark(outcome([[2.0]], [[1.0]]), 1.10)[0] == "-"
    assert report.mark(outcome([[1.0]], [], b="failed"), 1.10)[0] == "!"
    assert report.mark(outcome([], [[1.0]], a="failed"), 1.10)[0] == "*"
    assert report.mark(outcome([[1.0]], [], b="skipped"), 1.10)[0] == "x"
    assert report.mark(outcome([[1.0]], [[1.0]], version_b="v2"), 1.10)[0] == "x"
    assert report.mark(outcome([], [], a="skipped", b="skipped"), 1.10)[0] == " "
    assert report.regressed([outcome([[1.0]], [], b="failed")], 1.10)
    assert not report.regressed([outcome([], [[1.0]], a="failed")], 1.10)


def test_drift_between_rounds_cancels_in_the_paired_ratio():
    # the host slows 40 % over the combination; B is 2 % slower than A within each round
    a = [[1.0 + 0.1 * r] * 2 for r in range(5)]
    b = [[x * 1.02 for x in rnd] for rnd in a]
    o = outcome(a, b)
    assert o.ratio == pytest.approx(1.02) and o.round_ratios() == [pytest.approx([1.02] * 5)]


def test_allocations_combine_by_geometric_mean():
    o = outcome([[1.0]], [[0.8]])
    o.a.allocations += [[[1.0]], [[1.0]]]
    o.b.allocations += [[[1.0]], [[1.25]]]
    assert o.allocation_ratios == pytest.approx([0.8, 1.0, 1.25]) and o.ratio == pytest.approx(1.0)


def test_selection_is_asvs_regex_on_names_with_params():
    import re

    listing = [{"class": "KVCacheWrite", "methods": ["time_no_graph"], "params": [[16, 64], ["auto", "fp8"]]},
               {"class": "MLAWrite", "methods": ["time_no_graph"], "params": [[2]]}]
    names = [c.name for c in session.combinations(listing, [re.compile(r"KVCacheWrite\.time.*'fp8'")])]
    assert names == ["benchmarks.KVCacheWrite.time_no_graph(16, 'fp8')",
                     "benchmarks.KVCacheWrite.time_no_graph(64, 'fp8')"]
    assert len(session.combinations(listing, [])) == 5


def test_bad_flags_are_one_line(capsys):
    for argv in (["compare", "A", "B", "--factor", "0.9"], ["compare", "A", "B", "-b", "("]):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2 and "\n" not in capsys.readouterr().err.strip()


class _Graphless:
    """A benchmark class timed in cudagraph mode, as the suite's GPU classes are."""
    params, param_names, mode = [["x"]], ["implementation"], "cudagraph"

    def case(self, implementation):
        return type("Case", (), {"num_tokens": 1, "label": lambda self: "case"})()


def _worker_with(prepare):
    """An in-process compare worker whose revision's runner.prepare is `prepare` (its samplers cannot capture a
    graph, like vLLM's swap_blocks_batch)."""
    from kvbench import errors
    from kvbench.compare.worker import Worker

    def sampler(mode):
        raise errors.Unavailable(f"no graph in {mode}")

    worker = Worker(".")
    worker.errors = errors
    worker.suite = type("Suite", (), {"PRIMARY_MODE": "no_graph", "MAX_TOKENS": 8, "DEVICE": "cuda"})
    worker.runner = type("Runner", (), {"prepare": staticmethod(prepare)})
    worker.classes = lambda: {"Graphless": _Graphless}
    worker.pin = lambda req: None
    worker.prepared = type("Prepared", (), {"sampler": staticmethod(sampler),
                                            "verified": type("V", (), {"method": "bit-exact"})})
    return worker


def test_the_worker_checks_the_class_mode_before_it_allocates_and_skips_what_cannot_be_timed():
    from kvbench import errors

    seen = []

    def prepare(case, implementation, mode=None):  # today's runner: Unavailable before any allocation
        seen.append(mode)
        raise errors.Unavailable(f"{implementation} cannot be captured in {mode}")

    worker = _worker_with(prepare)
    reply = worker.op_prepare({"class": "Graphless", "method": "case", "params": ["x"]})
    assert seen == ["cudagraph"]
    assert (reply["status"], reply["reason"]) == ("skipped", "x cannot be captured in cudagraph")

    worker = _worker_with(lambda case, implementation: worker.prepared)  # an older revision's prepare: no mode
    assert worker.op_prepare({"class": "Graphless", "method": "case", "params": ["x"]})["status"] == "ok"
    assert worker.op_calibrate({}) == {"status": "skipped", "reason": "no graph in cudagraph"}
