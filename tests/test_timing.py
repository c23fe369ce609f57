import time

import pytest

from kvbench.asv import suite as asv_suite
from kvbench.measure import timing
from kvbench.errors import Unavailable
from kvbench.ops import kv


def test_calls_for_stays_in_bounds():
    assert timing.calls_for(1.0, 0.25, 1000) == 4
    assert timing.calls_for(1e-3, 1e-9, 1000) == 1000
    assert timing.calls_for(1e-3, 5e-3, 1000) == 1


def _busy(seconds: float) -> None:
    """Work on this thread's CPU for `seconds` of its own CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_cpu_sampler_reports_per_call_time_of_a_known_duration():
    sampler = timing.sampler("no_graph", lambda: _busy(0.012), "cpu")  # above the 10 ms CPU sample
    assert sampler.calls_per_sample == 1
    per_call = sampler.measure(3)
    assert all(0.012 <= t < 0.1 for t in per_call)
    assert sampler.elapsed() == pytest.approx(sum(per_call))


def test_cpu_sampler_counts_the_threads_work_not_its_waiting():
    # one timing thread (the default): a call that works 2 ms and then waits 10 ms costs 2 ms of CPU time; the
    # wall clock would say 12 ms (what a descheduled thread on a shared host would add)
    sampler = timing.sampler("no_graph", lambda: (_busy(0.002), time.sleep(0.010)), "cpu")
    assert sampler.config == {**sampler.config, "threads": 1, "clock": "process_time"}
    per_call = sampler.measure(3)
    assert all(0.002 <= t < 0.006 for t in per_call), per_call


def test_cpu_sampler_divides_by_calls_per_sample():
    calls = []
    sampler = timing.sampler("no_graph", lambda: calls.append(1), "cpu")
    assert sampler.calls_per_sample == timing.MAX_EAGER_CALLS  # a no-op is far below 1 ms
    before = len(calls)
    sampler.sample()
    assert len(calls) - before == sampler.calls_per_sample


def test_cudagraph_mode_needs_cuda():
    with pytest.raises(Unavailable, match="needs a CUDA device"):
        timing.sampler("cudagraph", lambda: None, "cpu")


class SmallWrite(asv_suite.Benchmark):
    params = [["torch"]]
    param_names = ["implementation"]

    def case(self, implementation):
        return kv.Case(num_tokens=4, num_heads=2, head_size=64, num_blocks=64, device="cpu")


def test_asv_timer_differences_are_the_samplers_per_call_times():
    bench = SmallWrite()
    bench.setup("torch")
    prepared = asv_suite._Process.prepared
    bench.setup("torch")  # asv calls setup before every sample: the case is prepared once per process
    assert asv_suite._Process.prepared is prepared
    sampler = prepared.sampler("no_graph")
    before = SmallWrite.timer()
    bench.sample()
    after = SmallWrite.timer()
    assert after - before == pytest.approx(sampler.elapsed() - before)
    assert sampler.calls_per_sample > 1 and 0 < after - before < 1e-3  # per call, not per sample
    bench.teardown("torch")  # after the first sample: the timed path is verified
    assert asv_suite._Process.checked


def test_prepared_reports_calls_per_sample_of_the_samplers_it_made():
    from kvbench.runner import make_case, prepare

    p = prepare(make_case("torch", num_tokens=4, num_blocks=64, num_heads=2, head_size=64, device="cpu"), "torch")
    assert p.calls_per_sample() == {}  # asking must not make a sampler
    s = p.sampler("no_graph")
    assert p.calls_per_sample() == {"no_graph": s.calls_per_sample} and s.calls_per_sample > 1
