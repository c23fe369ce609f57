import time

import pytest

from kvbench import asv_suite, timing
from kvbench.errors import Unavailable


def test_calls_for_stays_in_bounds():
    assert timing.calls_for(1.0, 0.25, 1000) == 4
    assert timing.calls_for(1e-3, 1e-9, 1000) == 1000
    assert timing.calls_for(1e-3, 5e-3, 1000) == 1


def test_cpu_sampler_reports_per_call_time_of_a_known_duration():
    sampler = timing.sampler("no_graph", lambda: time.sleep(0.012), "cpu")  # above the 10 ms CPU sample
    assert sampler.calls_per_sample == 1
    per_call = sampler.measure(3)
    assert all(0.012 <= t < 0.1 for t in per_call)
    assert sampler.elapsed() == pytest.approx(sum(per_call))


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


def test_asv_timer_differences_are_the_samplers_per_call_times(monkeypatch):
    class FakePrepared:
        def __init__(self):
            self.s = timing.sampler("no_graph", lambda: time.sleep(0.001), "cpu")

        def sampler(self, mode):
            return self.s

    p = FakePrepared()
    monkeypatch.setattr(asv_suite, "_current", p)
    timer = asv_suite.timer("no_graph")
    before = timer()
    asv_suite.sample("no_graph")
    after = timer()
    assert after - before == pytest.approx(p.s.measure(1)[0], rel=5) and 0.001 <= after - before < 0.01


def test_prepared_reports_calls_per_sample_of_the_samplers_it_made():
    from kvbench.runner import make_case, prepare

    p = prepare(make_case("torch", num_tokens=4, num_blocks=64, num_heads=2, head_size=64, device="cpu"), "torch")
    assert p.calls_per_sample() == {}  # asking must not make a sampler
    s = p.sampler("no_graph")
    assert p.calls_per_sample() == {"no_graph": s.calls_per_sample} and s.calls_per_sample > 1
