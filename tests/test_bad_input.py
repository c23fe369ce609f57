"""Bad input: one line on stderr naming the bad value (and the allowed ones), its own exit code, before any work.

Exit codes: 2 a bad flag, value or KVBENCH_* variable; 3 a file that cannot be read or written; 4 a device asked
for that is not usable; 1 a case that failed (tests/test_failures.py); 5 nothing measured (tests/test_cli.py).
"""

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
import torch

from kvbench import cli

SMALL = ["--device", "cpu", "--num-heads", "4", "--num-blocks", "64", "--iters", "3", "--num-tokens", "16",
         "--implementation", "torch"]


@pytest.fixture
def bad(capsys):
    """Run the CLI; return (exit code, the one stderr line), asserting it is one line and fast (no work done)."""

    def run(argv, max_s=5.0):
        start = time.perf_counter()
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        elapsed = time.perf_counter() - start
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err, err
        assert elapsed < max_s, f"{elapsed:.1f} s: the error came after work was done"
        return code, err

    return run


@pytest.fixture
def results_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"result_columns": ["result", "params"], "results": {}}))
    return path


def _cases(tmp):
    directory = tmp / "a-directory"
    directory.mkdir()
    truncated = tmp / "truncated.json"
    truncated.write_text('{"results": {')
    empty = tmp / "empty.json"
    empty.write_text("{}")
    lines = tmp / "state.jsonl"
    lines.write_text('{"benchmark": "x"}\nnot json\n')
    return [
        # (argv, exit code, words in the message)
        (["sweep", *SMALL, "--json", str(tmp / "missing" / "r.json")], 3, ["--json", "does not exist"]),
        (["sweep", *SMALL, "--csv", str(directory)], 3, ["--csv", "is a directory"]),
        (["sweep", *SMALL, "--plot", str(tmp / "no" / "r.png")], 3, ["--plot", "does not exist"]),
        (["sweep", *SMALL, "--iters", "0"], 2, ["--iters", "0 is out of range; choose 1 to 100000"]),
        (["sweep", *SMALL, "--iters", "1000000000"], 2, ["1000000000 is out of range"]),
        (["sweep", *SMALL, "--num-tokens", "0"], 2, ["--num-tokens", "0 is out of range"]),
        (["sweep", *SMALL, "--num-blocks", "-3"], 2, ["--num-blocks", "-3 is out of range"]),
        (["asv-report", str(tmp / "nope.json")], 3, ["asv result file", "does not exist"]),
        (["asv-report", str(directory)], 3, ["is a directory"]),
        (["asv-report", str(truncated)], 3, ["is not valid JSON"]),
        (["asv-report", str(empty)], 3, ["is not an asv result file"]),
        (["asv-summary", str(empty)], 3, ["is not an asv result file"]),
    ] + ([] if torch.version.cuda else [
        (["sweep", "--device", "cuda", "--num-tokens", "2"], 4, ["--device cuda was asked for", "CPU build"]),
        (["fidelity", "--num-tokens", "2"], 4, ["kvbench fidelity (it compares against CUDA events) needs a CUDA",
                                                "CPU build"]),
    ])


def test_each_bad_input_is_one_line_with_its_exit_code(bad, tmp_path):
    for argv, code, words in _cases(tmp_path):
        got, err = bad(argv)
        assert got == code, (argv, got, err)
        assert all(w in err for w in words), (argv, err)


def test_report_inputs_that_are_not_what_they_claim(bad, tmp_path, results_file):
    (tmp_path / "f.json").write_text('{"not": "a list"}')
    (tmp_path / "log.jsonl").write_text('{"a": 1}\n[1, 2]\n')
    assert bad(["asv-report", str(results_file), "--fidelity", str(tmp_path / "f.json")])[0] == 3
    code, err = bad(["asv-report", str(results_file), "--state-log", str(tmp_path / "log.jsonl")])
    assert code == 3 and "line 2 is not a JSON object" in err


@pytest.mark.parametrize("variable, value, words", [
    ("KVBENCH_DEVICE", "bogus", ["KVBENCH_DEVICE='bogus' is not supported", "cuda, cpu"]),
    ("KVBENCH_COPY_BW", "abc", ["KVBENCH_COPY_BW='abc'", "positive number"]),
    ("KVBENCH_COPY_BW", "0", ["KVBENCH_COPY_BW='0'"]),
])
def test_bad_environment_values(bad, monkeypatch, variable, value, words):
    monkeypatch.setenv(variable, value)
    args = ["sweep", *SMALL] if variable != "KVBENCH_DEVICE" else ["sweep", "--num-tokens", "2"]
    code, err = bad(args)
    assert code == 2 and all(w in err for w in words), err


@pytest.mark.parametrize("variable, value, message", [
    ("KVBENCH_NUM_TOKENS", "16,lots", "KVBENCH_NUM_TOKENS: 'lots' is not a valid int; give comma-separated positive integers"),
    ("KVBENCH_BATCH", "yes", "KVBENCH_BATCH='yes' is not supported; use 1 (on) or 0 (off)"),
])
def test_bad_grid_variables_stop_the_suite_with_one_line(variable, value, message):
    env = {**os.environ, variable: value}
    run = subprocess.run([sys.executable, "-c", "import benchmarks.benchmarks"], cwd=pathlib.Path(__file__).parents[1],
                         env=env, capture_output=True, text=True)
    assert run.returncode != 0 and run.stderr.strip().splitlines()[-1].endswith(message), run.stderr[-500:]


@pytest.mark.parametrize("content", ["[]", '"fast"', '{"cpu:X": {"bytes_per_s": 0}}', "{not json"])
def test_a_corrupt_copy_bandwidth_cache_is_measured_again_with_a_warning(capsys, tmp_path, monkeypatch, content):
    from kvbench.measure import bandwidth

    monkeypatch.setenv("KVBENCH_CACHE_DIR", str(tmp_path))
    (tmp_path / "copy_bandwidth.json").write_text(content)
    monkeypatch.setattr(bandwidth, "measure_copy", lambda device: 5e9)
    bw = bandwidth.copy_bandwidth("cpu", "cpu:X")
    assert bw.bytes_per_s == 5e9 and bw.source.startswith("measured")
    assert "ignoring the copy-bandwidth cache" in capsys.readouterr().err
    assert json.loads((tmp_path / "copy_bandwidth.json").read_text())["cpu:X"]["bytes_per_s"] == 5e9


def test_vllm_history_with_a_commit_that_is_not_there(bad, tmp_path):
    repo = tmp_path / "vllm"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    code, err = bad(["vllm-history", "--vllm-repo", str(repo), "--commit", "deadbeef"])
    assert code == 2 and err.startswith(f"kvbench: error: --commit 'deadbeef' is not a commit of {repo}")


def test_a_failed_write_leaves_an_existing_file_as_it_was(tmp_path, monkeypatch):
    from kvbench.cli import report

    out = tmp_path / "r.json"
    out.write_text('{"earlier": true}')

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(report.json, "dump", broken_dump)
    with pytest.raises(OSError):
        report.write_json(out, {}, [])
    assert json.loads(out.read_text()) == {"earlier": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write read-only files")
def test_an_unwritable_output_file(bad, tmp_path):
    locked = tmp_path / "locked.csv"
    locked.write_text("")
    locked.chmod(0o444)
    code, err = bad(["sweep", *SMALL, "--csv", str(locked)])
    assert code == 3 and "is not writable" in err


@pytest.mark.parametrize("variable, value", [("KVBENCH_NUM_TOKENS", "16,0"), ("KVBENCH_IMPLEMENTATIONS", "nope")])
def test_check_env_rejects_a_grid_the_suite_rejects_with_the_same_line(variable, value):
    """`kvbench check-env` (bench.sh runs it before asv) applies the suite's own rules: the suite's import fails
    on the value with the very line check-env prints."""
    env = {**os.environ, variable: value}
    root = pathlib.Path(__file__).parents[1]
    suite = subprocess.run([sys.executable, "-c", "import benchmarks.benchmarks"], cwd=root, env=env,
                           capture_output=True, text=True)
    check = subprocess.run([sys.executable, "-m", "kvbench.cli", "check-env"], cwd=root, env=env,
                           capture_output=True, text=True)
    assert suite.returncode != 0 and check.returncode == 2, check.stderr
    suite_line = suite.stderr.strip().splitlines()[-1]
    assert suite_line.startswith("kvbench.errors.ConfigError: "), suite_line
    assert check.stderr == f"kvbench: error: {suite_line.split(': ', 1)[1]}\n"
