"""kvbench.isolation: a call in a forked child, its result, its exceptions, and a child that dies."""

import json
import os
import signal
import subprocess
import sys

import pytest

from kvbench import cli
from kvbench.cli import sweep
from kvbench.measure import isolation
from kvbench.errors import CaseError, KvbenchError


def _pid_and(value):
    return os.getpid(), value * 2


def test_the_call_runs_in_another_process_and_its_result_comes_back():
    pid, doubled = isolation.run(_pid_and, 21)
    assert pid != os.getpid() and doubled == 42


def _raise_case_error():
    raise CaseError("num_tokens 3 is not allowed")


def test_an_exception_in_the_child_is_raised_here_with_its_type():
    with pytest.raises(CaseError, match="num_tokens 3 is not allowed"):
        isolation.run(_raise_case_error)


class _Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("no pickling")


def _raise_unpicklable():
    raise _Unpicklable("lock held")


def test_an_unpicklable_exception_still_comes_back_as_its_message():
    with pytest.raises(KvbenchError, match="lock held"):
        isolation.run(_raise_unpicklable)


@pytest.mark.parametrize("die, how", [(lambda: os._exit(3), "exit status 3"),
                                      (lambda: os.kill(os.getpid(), signal.SIGKILL), "signal 9")])
def test_a_child_that_dies_is_reported_with_how_it_ended(die, how):
    with pytest.raises(isolation.ChildDied, match=how):
        isolation.run(die)


def test_a_parent_with_cuda_initialised_is_refused(monkeypatch):
    monkeypatch.setattr(isolation, "cuda_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="has not initialised CUDA"):
        isolation.run(_pid_and, 1)


def test_cases_run_in_fresh_processes_on_cuda_only_unless_asked_otherwise():
    assert sweep.caller("cuda", same=False) is isolation.run
    assert sweep.caller("cuda", same=True) is not isolation.run
    assert sweep.caller("cpu", same=False)(_pid_and, 2) == (os.getpid(), 4)


def test_a_case_whose_process_dies_is_a_failed_row_and_the_others_are_measured(monkeypatch, tmp_path):
    def caller(function, *args):
        if function is sweep.run_case and args[0].num_tokens == 4:
            raise isolation.ChildDied("the child process running run_case died (signal 11)")
        return function(*args)

    monkeypatch.setattr(sweep, "caller", lambda device, same: caller)
    rc = cli.main(["sweep", "--device", "cpu", "--mode", "no_graph", "--num-heads", "2", "--head-size", "64",
                   "--num-blocks", "8", "--iters", "3", "--implementation", "torch", "--num-tokens", "2", "4", "8",
                   "--json", str(tmp_path / "r.json")])
    import json

    rows = json.loads((tmp_path / "r.json").read_text())["results"]
    assert rc == 1 and [r["status"] for r in rows] == ["ok", "failed", "ok"]
    assert rows[1]["message"] == "the child process running run_case died (signal 11)"


def test_warming_triton_imports_its_first_launch_modules_without_touching_cuda():
    """The parent asv forks from imports what Triton's first launch would import in every benchmark process."""
    pytest.importorskip("triton")
    code = (
        "import importlib.util, json, sys, torch\n"
        "from kvbench.measure import isolation\n"
        "isolation.warm_triton()\n"
        "known = [m for m in isolation.FIRST_LAUNCH_MODULES if importlib.util.find_spec(m)]\n"
        "print(json.dumps({'known': known, 'missing': [m for m in known if m not in sys.modules],\n"
        "                  'cuda': torch.cuda.is_initialized()}))\n"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert "triton.compiler.code_generator" in out["known"]  # the largest share, present in Triton 3.x
    assert out["missing"] == []
    assert out["cuda"] is False
