"""The main job's inputs and what it reports: every KVBENCH_* variable is checked before asv starts (`kvbench
check-env`, run by scripts/bench.sh: one line, exit 2, nothing run or published), the summary counts only the
benchmarks of this run (an earlier run of the same commit leaves its results in the same file), and a skip
reason names the setting that applies where it is shown (a flag on the command line, a KVBENCH_* variable in asv).
"""

import json
import math
import os
import pathlib
import re
import subprocess
import sys
import time

import pytest
import torch

from kvbench import cli, config

ROOT = pathlib.Path(__file__).resolve().parents[1]
THIS = pathlib.Path(__file__).name
TINY = {"KVBENCH_NUM_TOKENS": "16", "KVBENCH_IMPLEMENTATIONS": "torch", "KVBENCH_DTYPES": "bfloat16"}


@pytest.fixture
def clean_env(monkeypatch):
    """No KVBENCH_* variable but the test's private copy-bandwidth cache (conftest)."""
    for name in [n for n in os.environ if n.startswith("KVBENCH_") and n != "KVBENCH_CACHE_DIR"]:
        monkeypatch.delenv(name)
    return monkeypatch


def check_env(capsys) -> tuple[int, str, str]:
    code = cli.main(["check-env"])
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def _bad_values(tmp: pathlib.Path) -> list[tuple[str, str, int, list[str]]]:
    (tmp / "a-file").write_text("")
    return [
        # (variable, value, exit code, words in the one line)
        ("KVBENCH_NUM_TOKENS", "abc", 2, ["KVBENCH_NUM_TOKENS: 'abc' is not a valid int; give comma-separated positive integers"]),
        ("KVBENCH_NUM_TOKENS", "16,0", 2, ["KVBENCH_NUM_TOKENS: '0'", "each item must be a positive integer"]),
        ("KVBENCH_NUM_TOKENS", "-16", 2, ["'-16'", "positive integer"]),
        ("KVBENCH_NUM_TOKENS", "16,,32", 2, ["KVBENCH_NUM_TOKENS='16,,32' has an empty item"]),
        ("KVBENCH_NUM_TOKENS", "16,", 2, ["empty item"]),
        ("KVBENCH_IMPLEMENTATIONS", "torch,no-such-impl", 2,
         ["KVBENCH_IMPLEMENTATIONS: 'no-such-impl' is not supported; choose from: torch, triton"]),
        ("KVBENCH_DTYPES", "int8", 2, ["KVBENCH_DTYPES: 'int8'", "half, bfloat16, float"]),
        ("KVBENCH_NUM_BLOCKS", "0", 2, ["KVBENCH_NUM_BLOCKS='0'", "positive integer"]),
        ("KVBENCH_MAX_TOKENS", "1.5", 2, ["KVBENCH_MAX_TOKENS='1.5'", "positive integer"]),
        ("KVBENCH_CPU_THREADS", "-1", 2, ["KVBENCH_CPU_THREADS='-1'", "positive integer"]),
        ("KVBENCH_EAGER", "yes", 2, ["KVBENCH_EAGER='yes'", "use 1 (on) or 0 (off)"]),
        ("KVBENCH_FIDELITY", "2", 2, ["KVBENCH_FIDELITY='2'"]),
        ("KVBENCH_BATCH", "on", 2, ["KVBENCH_BATCH='on'"]),
        ("KVBENCH_SKIP_SETUP", "true", 2, ["KVBENCH_SKIP_SETUP='true'"]),
        ("KVBENCH_REQUIRE_BROWSER", "y", 2, ["KVBENCH_REQUIRE_BROWSER='y'"]),
        ("KVBENCH_COPY_BW", "fast", 2, ["KVBENCH_COPY_BW='fast'", "positive number"]),
        ("KVBENCH_COPY_BW", "-1e9", 2, ["KVBENCH_COPY_BW='-1e9'"]),
        ("KVBENCH_DEVICE", "gpu", 2, ["KVBENCH_DEVICE='gpu' is not supported; choose one of: cuda, cpu"]),
        ("KVBENCH_VLLM_CPU_ISA", "avx512", 2, ["KVBENCH_VLLM_CPU_ISA='avx512'", "avx2"]),
        ("KVBENCH_VLLM_WHEELS", "wheels.vllm.ai", 2, ["KVBENCH_VLLM_WHEELS='wheels.vllm.ai'", "must be a URL"]),
        ("KVBENCH_VLLM_WHEELS", "ftp://mirror/vllm", 2, ["must be a URL"]),
        ("KVBENCH_STATE_LOG", str(tmp / "missing" / "log.jsonl"), 2, ["KVBENCH_STATE_LOG=", "does not exist"]),
        ("KVBENCH_STATE_LOG", str(tmp), 2, ["KVBENCH_STATE_LOG=", "must be a file, not a folder"]),
        ("KVBENCH_STATE_LOG", str(tmp / "a-file" / "log.jsonl"), 2, ["is not a folder"]),
        ("KVBENCH_CACHE_DIR", str(tmp / "missing" / "cache"), 2, ["KVBENCH_CACHE_DIR=", "does not exist"]),
        ("KVBENCH_CACHE_DIR", str(tmp / "a-file"), 2, ["KVBENCH_CACHE_DIR=", "must be a folder"]),
        ("KVBENCH_MACHINE", "gpu/box", 2, ["KVBENCH_MACHINE='gpu/box' is not supported", "letters, digits"]),
        ("KVBENCH_MACHINE", "..", 2, ["KVBENCH_MACHINE='..'"]),
        ("KVBENCH_MACHINE", "-box", 2, ["KVBENCH_MACHINE='-box'"]),
        ("KVBENCH_PLUGINS", "no_such_plugin_module", 2,
         ["KVBENCH_PLUGINS: module 'no_such_plugin_module' cannot be imported"]),
    ] + ([] if torch.version.cuda else [
        ("KVBENCH_DEVICE", "cuda", 4, ["KVBENCH_DEVICE=cuda was asked for", "CPU build"]),
    ])


def test_check_env_rejects_each_bad_value_in_one_line(clean_env, capsys, tmp_path):
    for variable, value, code, words in _bad_values(tmp_path):
        clean_env.setenv(variable, value)
        got, out, err = check_env(capsys)
        clean_env.delenv(variable)
        assert got == code, (variable, value, got, err)
        assert "\n" not in err and err.startswith("kvbench: error: "), (variable, value, err)
        assert all(w in err for w in words), (variable, value, err)
        assert out == "", (variable, value, out)


def test_check_env_accepts_good_values_and_grids_that_only_skip(clean_env, capsys, tmp_path):
    """A token count past this machine's largest, or an implementation not installed here, is a skip in the
    suite, not an error."""
    good = {"KVBENCH_NUM_TOKENS": "2, 16,1048576", "KVBENCH_IMPLEMENTATIONS": "torch,vllm-flash",
            "KVBENCH_DTYPES": "bfloat16,half", "KVBENCH_NUM_BLOCKS": "64", "KVBENCH_MAX_TOKENS": "1024",
            "KVBENCH_DEVICE": "cpu", "KVBENCH_EAGER": "0", "KVBENCH_FIDELITY": "1", "KVBENCH_BATCH": "0",
            "KVBENCH_STATE_LOG": str(tmp_path / "log.jsonl"), "KVBENCH_CACHE_DIR": str(tmp_path / "cache"),
            "KVBENCH_COPY_BW": "2.5e10", "KVBENCH_MACHINE": "gpu-box_1.h200", "KVBENCH_SKIP_SETUP": "1",
            "KVBENCH_CPU_THREADS": "2", "KVBENCH_VLLM_WHEELS": "https://wheels.vllm.ai",
            "KVBENCH_VLLM_CPU_ISA": "avx2", "KVBENCH_REQUIRE_BROWSER": "1", "KVBENCH_TORCH_SPEC": "torch==2.13.0"}
    for name, value in good.items():
        clean_env.setenv(name, value)
    code, out, err = check_env(capsys)
    assert (code, err) == (0, ""), err
    assert out.startswith("KVBENCH_* settings ok: KVBENCH_DEVICE=cpu, KVBENCH_NUM_TOKENS=2, 16,1048576")


def test_every_variable_has_a_check():
    assert set(config._checks()) == set(config.VARIABLES)


def test_an_unknown_variable_is_a_warning_naming_the_closest_known_one(clean_env, capsys):
    clean_env.setenv("KVBENCH_NUM_TOKEN", "16")
    clean_env.setenv("KVBENCH_ZZZ", "1")
    code, out, err = check_env(capsys)
    assert code == 0 and out.startswith("KVBENCH_* settings ok")
    assert err.splitlines() == [
        "kvbench: warning: KVBENCH_NUM_TOKEN is not a kvbench variable and is ignored; did you mean "
        "KVBENCH_NUM_TOKENS?",
        "kvbench: warning: KVBENCH_ZZZ is not a kvbench variable and is ignored; kvbench info lists the known ones",
    ]


def test_every_kvbench_variable_the_repository_uses_is_known():
    """So that the unknown-variable warning never fires on one of kvbench's own (CI sets some of them)."""
    used = set()
    for folder in ("scripts", ".github", ".ci", "src/kvbench", "benchmarks", "tests"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in ("", ".sh", ".py", ".yml", ".json") and path.name != THIS:
                used |= set(re.findall(r"KVBENCH_[A-Z][A-Z0-9_]*", path.read_text(errors="replace")))
    used -= {"KVBENCH_ROOT"}  # a Python constant (kvbench.asv.vllm_wheels), not a variable
    assert used and used <= set(config.VARIABLES), used - set(config.VARIABLES)


@pytest.mark.parametrize("message, expected", [
    ("num_tokens 32 exceeds the cache's 16 slots (num_blocks 1 x block_size 16); use --num-blocks 2 or more",
     "num_tokens 32 exceeds the cache's 16 slots (num_blocks 1 x block_size 16); use KVBENCH_NUM_BLOCKS=2 or more"),
    ("only 1.00 GiB is free; use --num-blocks 512 or fewer",
     "only 1.00 GiB is free; use KVBENCH_NUM_BLOCKS=512 or fewer"),
    ("use --num_blocks 3 or more", "use KVBENCH_NUM_BLOCKS=3 or more"),
    ("try --dtype or --implementation", "try KVBENCH_DTYPES or KVBENCH_IMPLEMENTATIONS"),
    ("needs --block-size 32", "needs block size 32"),  # no asv equivalent: plain words
    ("no flag here: x--y, KVBENCH_NUM_BLOCKS", "no flag here: x--y, KVBENCH_NUM_BLOCKS"),
])
def test_a_message_is_reworded_for_asv(message, expected):
    assert config.for_asv(message) == expected


def test_the_command_line_still_names_its_flag(capsys):
    code = cli.main(["sweep", "--device", "cpu", "--num-heads", "4", "--num-blocks", "1", "--num-tokens", "32",
                     "--iters", "3", "--implementation", "torch"])
    err = capsys.readouterr().err
    assert code == 2  # a case the flags describe that cannot be: bad input
    assert err.strip().endswith("use --num-blocks 2 or more") and "KVBENCH_NUM_BLOCKS" not in err


def test_a_batch_files_a_skip_reason_in_asv_words():
    from kvbench.asv import batch
    from kvbench.runner import Result

    result = Result("torch", "no_graph", 16, "skipped", {}, message="only 1 GiB free; use --num-blocks 5 or fewer")
    assert batch.record_of(result, None)["reason"] == "only 1 GiB free; use KVBENCH_NUM_BLOCKS=5 or fewer"


# asv-summary: counts of this run only


def _result_file(path: pathlib.Path, started: dict[str, float]) -> pathlib.Path:
    """An asv result file (asv 0.6's layout) with, per benchmark, three combinations (ran, skipped, failed) and
    the start time given (seconds since the epoch; asv records milliseconds)."""
    columns = ["result", "params", "version", "started_at", "duration", "samples"]
    results = {name: [[1e-6, math.nan, None], [["1", "2", "3"]], "v1", int(at * 1000), 1.5, None]
               for name, at in started.items()}
    path.write_text(json.dumps({"commit_hash": "0" * 40, "result_columns": columns, "results": results}))
    return path


def summary(capsys, *argv) -> tuple[int, list[str]]:
    code = cli.main(["asv-summary", *argv])
    return code, capsys.readouterr().out.splitlines()


def test_summary_counts_only_the_benchmarks_of_this_run(tmp_path, capsys):
    now = time.time()
    mixed = _result_file(tmp_path / "r.json", {"benchmarks.Old.time_x": now - 3600, "benchmarks.New.time_x": now})
    assert summary(capsys, str(mixed), "--since", str(int(now)))[1] == ["asv run: 1 ran, 1 skipped, 1 failed"]
    assert summary(capsys, str(mixed))[1] == ["asv run: 2 ran, 2 skipped, 2 failed"]  # without --since: all


def test_summary_of_a_run_that_measured_nothing_says_so(tmp_path, capsys):
    now = time.time()
    stale = _result_file(tmp_path / "r.json", {"benchmarks.Old.time_x": now - 3600})
    before = stale.read_bytes()
    code, lines = summary(capsys, str(stale), "--since", str(int(now)))
    assert code == 5 and lines == [f"asv run: this run measured nothing (no benchmark of this run in {stale}); "
                                   "see asv's output above"]
    assert stale.read_bytes() == before  # the earlier run's results are kept
    code, lines = summary(capsys, "--since", str(int(now)))
    assert code == 5 and lines == ["asv run: this run measured nothing (no benchmark of this run in no result "
                                   "file); see asv's output above"]


def test_summary_groups_repeated_reasons_with_counts(tmp_path, capsys):
    now = time.time()
    results = _result_file(tmp_path / "r.json", {"benchmarks.New.time_x": now})
    log = tmp_path / "log.jsonl"
    entries = [{"status": "failed", "reason": "writer: wrong [timed path; seed 1]"},
               {"status": "failed", "reason": "writer: wrong [timed path; seed 2]"},
               {"status": "failed", "reason": "writer: wrong"},
               {"status": "skipped", "reason": "use KVBENCH_NUM_BLOCKS=2 or more"},
               {"status": "skipped", "reason": "use KVBENCH_NUM_BLOCKS=2 or more"},
               {"status": "ok", "reason": None}]
    log.write_text("".join(json.dumps(e) + "\n" for e in entries))
    code, lines = summary(capsys, str(results), "--since", str(int(now)), "--state-log", str(log))
    assert code == 1  # something failed
    assert lines == ["asv run: 1 ran, 1 skipped, 1 failed", "  failed x3: writer: wrong",
                     "  skipped x2: use KVBENCH_NUM_BLOCKS=2 or more"]


# scripts/bench.sh in a clone of the repository


@pytest.fixture
def clone(tmp_path):
    """A clone of this repository and an environment for bench.sh in it: this interpreter, a private HOME (asv's
    machine file), no KVBENCH_* variable of the caller's."""
    work = tmp_path / "kvbench"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVBENCH_")}
    env.update(KVBENCH_SKIP_SETUP="1", KVBENCH_DEVICE="cpu", HOME=str(home), KVBENCH_MACHINE="testbox",
               KVBENCH_CACHE_DIR=str(tmp_path / "cache"),
               PATH=f"{pathlib.Path(sys.executable).parent}:{os.environ['PATH']}")
    return work, env


def bench(work, env, *args, **variables) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/bench.sh", *args], cwd=work, env={**env, **variables},
                          capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("variables, message", [
    ({"KVBENCH_NUM_TOKENS": "abc"}, "kvbench: error: KVBENCH_NUM_TOKENS: 'abc' is not a valid int; give comma-separated positive integers"),
    ({"KVBENCH_NUM_TOKENS": "16,0"},
     "kvbench: error: KVBENCH_NUM_TOKENS: '0' is not supported; each item must be a positive integer"),
    ({"KVBENCH_IMPLEMENTATIONS": "torch,no-such-impl"},
     "kvbench: error: KVBENCH_IMPLEMENTATIONS: 'no-such-impl' is not supported; choose from: torch, triton, "),
])
def test_bench_sh_stops_on_a_bad_input_before_anything_runs(clone, variables, message):
    """One line on stderr, exit 2, and nothing run or written: no asv machine file, no results, no site."""
    work, env = clone
    run = bench(work, env, **variables)
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert run.stderr.count("\n") == 1 and run.stderr.startswith(message), run.stderr
    assert run.stdout == ""
    assert not (work / ".asv").exists()
    assert not (pathlib.Path(env["HOME"]) / ".asv-machine.json").exists()


@pytest.mark.slow
def test_a_run_that_measures_nothing_is_not_summarised_as_an_earlier_one(clone):
    """A first run of the commit measures 16 tokens and skips 32 (one block is too small: the reason names
    KVBENCH_NUM_BLOCKS, not the command line's flag); a second run of the same commit whose asv discovery fails
    publishes the site from the results there are, says it measured nothing, exits non-zero and keeps the first
    run's result file as it was."""
    work, env = clone
    first = bench(work, env, "-b", r"KVCacheWrite\.time_no_graph",
                  **{**TINY, "KVBENCH_NUM_TOKENS": "16,32", "KVBENCH_NUM_BLOCKS": "1"})
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    reason = ("num_tokens 32 exceeds the cache's 16 slots (num_blocks 1 x block_size 16); "
              "use KVBENCH_NUM_BLOCKS=2 or more")
    assert "asv run: 2 ran, 2 skipped, 0 failed" in first.stdout
    assert f"  skipped x2: {reason}" in first.stdout.splitlines()
    assert reason in first.stdout + first.stderr  # asv's own report of the skip
    assert "--num-blocks" not in first.stdout + first.stderr
    log = [json.loads(line) for line in (work / ".asv/run-log.jsonl").read_text().splitlines()]
    assert sorted(e["reason"] for e in log if e["status"] == "skipped") == [reason, reason]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True).stdout.strip()
    [result] = (work / ".asv/results/testbox").glob(f"{commit[:8]}-*.json")
    earlier = result.read_bytes()

    (work / "benchmarks" / "broken.py").write_text("raise RuntimeError('this suite does not import')\n")
    (work / ".asv/html/index.html").unlink()
    second = bench(work, env, "-b", r"KVCacheWrite\.time_no_graph", **TINY)
    assert second.returncode != 0
    lines = second.stdout.splitlines()
    assert f"asv run: this run measured nothing (no benchmark of this run in .asv/results/testbox/{result.name}); " \
           "see asv's output above" in lines, second.stdout[-3000:]
    assert not any(re.match(r"asv run: \d+ ran", line) for line in lines)
    assert result.read_bytes() == earlier
    assert (work / ".asv/html/index.html").exists()  # published from the results there are


@pytest.mark.slow
@pytest.mark.parametrize("batch", ["0", "1"])
def test_an_asv_skip_reason_names_the_variable_with_and_without_batches(clone, batch):
    """A cache too large for this machine's memory is skipped before anything is allocated, in a batch
    (kvbench.asv.batch files the reason) or one case per process (the suite's own set-up): asv's output, the
    state log and the summary all say KVBENCH_NUM_BLOCKS, never the command line's --num-blocks."""
    work, env = clone
    run = bench(work, env, "-b", r"KVCacheWrite\.time_no_graph",
                **{**TINY, "KVBENCH_NUM_BLOCKS": "1000000000", "KVBENCH_BATCH": batch, "KVBENCH_COPY_BW": "1e10"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "asv run: 0 ran, 2 skipped, 0 failed" in run.stdout
    reason = re.compile(r"num_blocks 1000000000 needs [\d.]+ GiB on cpu but only [\d.]+ GiB is free; "
                        r"use KVBENCH_NUM_BLOCKS=\d+ or fewer")
    summary_lines = [line for line in run.stdout.splitlines() if re.fullmatch("  skipped x1: " + reason.pattern, line)]
    assert len(summary_lines) == 2  # auto and fp8: each its own number of blocks that fits
    assert len(reason.findall(run.stdout + run.stderr)) >= 4  # asv's report of each skip, and the summary's
    assert "--num-blocks" not in run.stdout + run.stderr
    log = [json.loads(line) for line in (work / ".asv/run-log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(e["status"] == "skipped" and reason.fullmatch(e["reason"]) for e in log)
    assert all(("batch_pid" in e) == (batch == "1") for e in log)


def test_the_main_grid_takes_the_served_input_dtypes_unless_told_float_as_well(clean_env):
    """By default the main grid has vLLM's serving dtypes; KVBENCH_DTYPES adds vLLM's script's float."""
    assert config.input_dtypes() == ["half", "bfloat16"]
    clean_env.setenv("KVBENCH_DTYPES", "half,bfloat16,float")
    assert config.input_dtypes() == ["half", "bfloat16", "float"]
