"""A batch measures a class's cases in one process and files them in the run's store; the
other processes of the run hand asv the stored samples, failures and skips (here on CPU, with KVBENCH_BATCH=1)."""

import sys
import pathlib

import pytest

from kvbench.asv import batch, suite
from kvbench.measure import timing
from kvbench.ops import kv

HERE = pathlib.Path(__file__).resolve().parent


class Small(suite.Benchmark):
    params = [[4, 8, 4096], ["torch", "first-call-only"]]
    param_names = ["num_tokens", "implementation"]

    def case(self, num_tokens, implementation):
        return kv.Case(num_tokens=num_tokens, num_heads=2, head_size=64, num_blocks=512, device="cpu")


class SmallTwin(Small):
    """Another class describing the same cases (as KVCacheWriteBF16 and KVCacheWrite do)."""


@pytest.fixture
def store(tmp_path, monkeypatch):
    sys.path.insert(0, str(HERE))
    import broken_writers  # noqa: F401  (registers first-call-only)

    monkeypatch.setenv("KVBENCH_BATCH", "1")
    monkeypatch.setattr(batch, "folder", lambda: str(tmp_path / "store"))
    monkeypatch.setattr(timing, "prime_graphs", lambda: pytest.fail("graphs primed on a CPU"))
    yield tmp_path / "store"
    sys.path.remove(str(HERE))
    suite._Process.key = None


def _new_process():
    suite._Process.key = None  # what a fresh asv process starts with


def test_the_first_process_measures_its_groups_cases_and_the_others_use_them(store, monkeypatch):
    _new_process()
    Small().setup(8, "torch")
    assert suite._Process.stored["batch_pid"] is not None
    assert len(list(store.glob("*.json"))) == 4  # 8 and 4 tokens of both; 4096 is past the CPU grid's 1024
    led = suite._Process.stored["samples"]
    assert len(led) == suite.SAMPLES and all(s > 0 for s in led)

    monkeypatch.setattr(batch, "lead", lambda *a, **k: pytest.fail("a second batch for the same group"))
    _new_process()
    bench = Small()
    bench.setup(4, "torch")
    stored = batch.read(bench.case(4, "torch"), "torch", "no_graph")["samples"]
    before = Small.timer()
    bench.sample()
    assert Small.timer() - before == stored[0]  # asv's sample is the stored one
    for _ in range(suite.SAMPLES):
        bench.sample()
    assert suite._Process.replay.samples == stored + stored[:1]  # from the first again past the end

    _new_process()
    twin = SmallTwin()
    twin.setup(4, "torch")  # the same case, described by another class: not measured again
    assert twin.x_ideal() > 0 and suite._Process.stored["samples"] == stored


def test_a_batch_files_failures_and_their_processes_raise_them(store):
    _new_process()
    Small().setup(4, "torch")  # leads the class's batch: its failures are filed too
    _new_process()
    with pytest.raises(RuntimeError, match="nothing written at the mapped slots.*timed path"):
        Small().setup(4, "first-call-only")
    _new_process()
    with pytest.raises(RuntimeError, match="nothing written at the mapped slots"):
        Small().setup(8, "first-call-only")  # filed by the first process's batch
    assert batch.read(Small().case(8, "x"), "first-call-only", "no_graph")["status"] == "failed"


class WithGpuOnly(Small):
    params = [[4, 8, 16], ["torch", "vllm-flash"]]


def test_a_batch_files_skips_and_their_processes_skip(store):
    _new_process()
    WithGpuOnly().setup(4, "torch")
    _new_process()
    with pytest.raises(NotImplementedError, match=r"^vllm-flash: "):
        WithGpuOnly().setup(8, "vllm-flash")
    assert suite._Process.stored["status"] == "skipped"


def test_a_process_that_dies_mid_batch_costs_only_the_case_it_died_on(store, monkeypatch):
    real, calls = batch.runner.run_case, []

    def dies_on_8_torch_once(case, implementation, *args):
        calls.append((case.num_tokens, implementation))
        if calls.count((8, "torch")) == 1 and calls[-1] == (8, "torch"):
            raise SystemExit("killed")  # not an Exception: as if the process had died here
        return real(case, implementation, *args)

    monkeypatch.setattr(batch.runner, "run_case", dies_on_8_torch_once)
    _new_process()
    with pytest.raises(SystemExit):
        WithGpuOnly().setup(4, "torch")
    assert calls == [(4, "torch"), (4, "vllm-flash"), (8, "torch")]
    _new_process()
    with pytest.raises(RuntimeError, match=r"the batch process \d+ ended while measuring this case"):
        WithGpuOnly().setup(8, "torch")  # the case it died on: failed, with why, and not measured again
    _new_process()
    WithGpuOnly().setup(16, "torch")  # the next process leads a batch of the rest
    assert calls[3:] == [(16, "torch"), (8, "vllm-flash"), (16, "vllm-flash")]
    assert suite._Process.stored["status"] == "ok"


def test_a_batch_past_its_time_budget_leaves_the_rest_to_later_processes(store, monkeypatch):
    monkeypatch.setattr(suite, "BATCH_BUDGET_S", 0.0)
    _new_process()
    Small().setup(4, "torch")  # its own case is measured whatever the budget
    assert len(list(store.glob("*.json"))) == 1
    _new_process()
    Small().setup(8, "torch")
    assert len(list(store.glob("*.json"))) == 2


def test_cases_past_the_grid_are_skipped_by_their_own_process_without_a_batch(store, monkeypatch):
    monkeypatch.setattr(batch, "lead", lambda *a, **k: pytest.fail("a batch for a case past the grid"))
    _new_process()
    with pytest.raises(NotImplementedError, match="stops at 1024 tokens"):
        Small().setup(4096, "torch")


def test_batches_are_on_by_default_on_a_gpu_only(monkeypatch):
    monkeypatch.delenv("KVBENCH_BATCH", raising=False)
    assert batch.enabled("cuda") and not batch.enabled("cpu")
    monkeypatch.setenv("KVBENCH_BATCH", "0")
    assert not batch.enabled("cuda")


class OnGpu(suite.Benchmark):
    params = [[16, 1024], ["triton", "torch"]]
    param_names = ["num_tokens", "implementation"]

    def case(self, num_tokens, implementation):
        return kv.Case(num_tokens=num_tokens, num_blocks=1024, device="cuda")


@pytest.mark.gpu
def test_a_gpu_batch_measures_its_groups_cases_in_this_process(tmp_path, monkeypatch):
    import os
    import statistics

    monkeypatch.delenv("KVBENCH_BATCH", raising=False)  # on by default on a GPU
    monkeypatch.setattr(batch, "folder", lambda: str(tmp_path))
    _new_process()
    OnGpu().setup(16, "triton")
    records = {n: batch.read(OnGpu().case(n, "triton"), "triton", "cudagraph") for n in (16, 1024)}
    assert all(r["status"] == "ok" and r["batch_pid"] == os.getpid() for r in records.values())
    assert statistics.median(records[1024]["samples"]) > statistics.median(records[16]["samples"]) > 0
    assert batch.read(OnGpu().case(16, "torch"), "torch", "cudagraph")["batch_pid"] == os.getpid()
    monkeypatch.setattr(batch, "lead", lambda *a, **k: pytest.fail("a second batch for the same group"))
    _new_process()
    bench = OnGpu()
    bench.setup(1024, "triton")
    bench.sample()
    assert OnGpu.timer() == records[1024]["samples"][0]
    suite._Process.key = None
