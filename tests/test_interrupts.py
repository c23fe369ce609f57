"""Ctrl-C and SIGTERM: one line, what was finished kept (marked partial), exit 128 + signal, no traceback."""

import json
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ARGS = ["--device", "cpu", "--num-heads", "4", "--num-blocks", "64", "--iters", "100", "--implementation", "torch",
        "--num-tokens", "2", "4", "8", "16", "32", "64"]


def _interrupt_after_first_case(signum, *extra):
    """Start a sweep, send `signum` once its first case is done; (exit code, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "kvbench.cli", "sweep", *ARGS, *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    err = []
    for line in proc.stderr:
        err.append(line)
        if line.startswith("[1/"):
            proc.send_signal(signum)
            break
    out, rest = proc.communicate(timeout=120)
    return proc.returncode, out, "".join(err) + rest


@pytest.mark.parametrize("signum, code, name", [(signal.SIGINT, 130, "SIGINT"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_sweep_interrupted_keeps_its_finished_cases(tmp_path, signum, code, name):
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    rc, out, err = _interrupt_after_first_case(signum, "--json", str(out_json), "--csv", str(out_csv))
    assert rc == code, err
    assert "Traceback" not in err and "Traceback" not in out
    last = err.strip().splitlines()[-1]
    data = json.loads(out_json.read_text())
    finished = len(data["results"])
    assert finished >= 1 and all(r["status"] == "ok" for r in data["results"])
    assert last == (f"kvbench: interrupted ({name}) after {finished} of 6 cases; the {finished} are in "
                    f"{out_json}, {out_csv} (marked partial)")
    assert data["partial"] == {"finished": finished, "planned": 6, "signal": name}
    assert out_csv.read_text().splitlines()[1].endswith(",yes")
    assert "| 2            |" in out  # the finished rows' table was printed


def test_without_output_files_the_table_holds_them():
    rc, out, err = _interrupt_after_first_case(signal.SIGINT)
    assert rc == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("are in the tables above (no --json, --csv or --plot was given)")
    assert "| 2            |" in out


def test_other_commands_end_in_one_line_too(tmp_path):
    """kvbench info measures the copy bandwidth first (a few seconds on a fresh cache): interrupted there."""
    proc = subprocess.Popen([sys.executable, "-c", "import os, signal, threading; "
                             "threading.Timer(3, lambda: os.kill(os.getpid(), signal.SIGTERM)).start(); "
                             "import time; from kvbench import cli; "
                             "cli.main(['info', '--device', 'cpu']) and None; time.sleep(30); raise SystemExit(0)"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"KVBENCH_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"})
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err
    # info either finished before the signal (then the sleep ends with the default SIGTERM action) or was stopped
    # by it with the one line and exit 143
    assert proc.returncode == -signal.SIGTERM or err.strip().splitlines()[-1] == "kvbench: interrupted (SIGTERM)"


def test_fidelity_interrupted_keeps_its_finished_rows(monkeypatch, tmp_path, capsys):
    """kvbench fidelity (CUDA only: its device and per-case processes stood in for) writes the rows it finished."""
    from kvbench import cli
    from kvbench.cli import commands
    from kvbench.errors import Interrupted
    from kvbench.measure.fidelity import Fidelity

    done = []

    def one_case(function, name, layout, tokens):
        if done:
            raise Interrupted(signal.SIGINT)
        done.append(tokens)
        return Fidelity(name, tokens, 8, 2.0, 2.02)

    monkeypatch.setattr(commands, "resolve", lambda device, needed_by=None: "cuda")
    monkeypatch.setattr(commands, "caller", lambda device, same: one_case)
    out = tmp_path / "f.json"
    assert cli.main(["fidelity", "--num-tokens", "2", "16", "--json", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"kvbench: interrupted (SIGINT) after 1 of 2 cases; the 1 are in {out} (marked partial)"
    rows = json.loads(out.read_text())
    assert len(rows) == 1 and rows[0]["num_tokens"] == 2 and rows[0]["partial"] is True
