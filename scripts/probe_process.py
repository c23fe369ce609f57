"""Diagnostics on a GPU machine behind kvbench's timing design (notes/measurement.md cites their outputs):
  overhead  where a benchmark process's time goes (context, verify, sampler steps, samples, exit)
  state     one process measuring case after case, next to a fresh process per case
  spread    the samples of cases that had wide spreads, at 1 ms and 4 ms per sample
  verify    the verification's steps in a fresh process, warm, and with eager module loading
  graphs    whether capturing more graphs slows the replays of earlier ones
  warmup    first-sample bias and calibration per warm-up variant, after idle gaps
  placement cases that move between processes: the same graph against a second copy of its tensors in the same
            process, with a longer pre-sample sleep and after a longer warm-up, over many fresh processes
  twins     which tensors' placement moves those cases (a second input set, or second caches, in the same
            process), next to the plain sampler
  steps     which of the sampler's set-up steps changes a graph's replay time: one graph captured right after
            verification, then with each of the sampler's steps added before it
  firstuse  where a fresh process's preparation goes (profiled: the first call's kernel loading, Triton's first
            launch), with optional extra warming in the parent (--prewarm), and what exiting costs per GiB held

Each case runs in a child forked from this (CUDA-free) process, as asv's forkserver does, and reports back as
JSON through a pipe. Usage: python3 scripts/probe_process.py WHAT [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

from kvbench import asv_suite, guards, timing
from kvbench.fidelity import independent_per_call_s
from kvbench.runner import make_case, prepare


def in_child(work):
    """Run `work()` in a forked child; return (its JSON-able result, wall seconds from fork to reaped exit)."""
    read, write = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            out = work()
        except Exception as exc:
            out = {"error": f"{type(exc).__name__}: {exc}"}
        out["child_done_s"] = time.perf_counter() - start
        with os.fdopen(write, "w") as f:
            json.dump(out, f)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    os.waitpid(pid, 0)
    return json.loads(text), time.perf_counter() - start


def spread(values):
    q = statistics.quantiles(values, n=4)
    return (q[2] - q[0]) / statistics.median(values)


def overhead(args):
    rows = []
    cases = [("torch", 16), ("triton", 16), ("triton", 65536), ("torch", 65536), ("triton", 1024)]

    def bare():
        from kvbench.device import ensure_context

        t = time.perf_counter()
        ensure_context("cuda")
        return {"context_s": time.perf_counter() - t}

    for _ in range(3):
        out, wall = in_child(bare)
        rows.append({"case": "bare context", "wall_s": wall, **out})
    for warmup in (timing.WARMUP_S, 0.0):
        for impl, tokens in cases:
            for _ in range(2):
                def work(impl=impl, tokens=tokens, warmup=warmup):
                    t0 = time.perf_counter()
                    p = asv_suite.setup_case(impl, tokens, asv_suite.NUM_BLOCKS)
                    t1 = time.perf_counter()
                    clock = (guards.gpu_state() or {}).get("sm_clock_mhz")
                    timing.WARMUP_S = warmup
                    s = p.sampler("cudagraph")
                    t2 = time.perf_counter()
                    per_call = s.measure(20)
                    t3 = time.perf_counter()
                    return {"prepare_s": t1 - t0, "sampler_s": t2 - t1, "samples_s": t3 - t2, "steps": p.steps(),
                            "clock_after_prepare": clock, "k": s.calls_per_sample,
                            "samples_us": [round(x * 1e6, 3) for x in per_call]}
                out, wall = in_child(work)
                out["exit_s"] = wall - out.pop("child_done_s")
                rows.append({"case": f"{impl} {tokens}", "warmup_s": warmup, "wall_s": wall, **out})
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "samples_us"}), flush=True)
                if "samples_us" in out:
                    x = out["samples_us"]
                    print(f"   first 3 {x[:3]} median {statistics.median(x):.3f} spread {100 * spread(x):.2f} %")
    return rows


def state(args):
    """One process measuring a sequence of cases (as the CLI does), next to fresh processes per case."""
    def measure(p, label):
        s = p.sampler("cudagraph")
        ours = statistics.median(s.measure(20))
        theirs = independent_per_call_s(s.graph, s.calls_per_sample)
        return {"step": label, "case": f"{p.impl.name} {p.case.num_tokens}", "kvbench_us": ours * 1e6,
                "independent_us": theirs * 1e6, "k": s.calls_per_sample}

    def sequence(impl):
        def work():
            import torch

            def fresh():
                gc.collect()
                torch.cuda.empty_cache()

            rows = []
            run = lambda n, label: rows.append(measure(prepare(make_case(impl, num_tokens=n), impl), label))  # noqa
            run(16, "first case")
            run(16, "same case again")
            run(64, "next case")
            run(16, "16 again")
            fresh()
            run(16, "after gc + empty_cache")
            fresh()
            run(64, "after gc + empty_cache")
            run(1024, "big case")
            run(16, "after big case")
            fresh()
            run(16, "after big case, gc + empty_cache")
            a = prepare(make_case(impl, num_tokens=16), impl)
            rows.append(measure(a, "A alive"))
            b = prepare(make_case(impl, num_tokens=16), impl)
            rows.append(measure(b, "B while A alive"))
            rows.append(measure(a, "A again"))
            return {"rows": rows}
        return work

    out = []
    for impl in args.implementation:
        for n in (16, 64):
            for i in range(3):
                def fresh_case(n=n):
                    return {"rows": [measure(prepare(make_case(impl, num_tokens=n), impl), f"fresh process {i}")]}
                out += in_child(fresh_case)[0].get("rows", [])
        res, _ = in_child(sequence(impl))
        out += res.get("rows", [res])
    for r in out:
        print(json.dumps(r), flush=True)
    return out


SPREAD_CASES = [
    ("torch", 16, dict(num_heads=32, head_size=128, block_size=32)),
    ("triton", 4096, dict(dtype="half")),
    ("triton", 32, dict(dtype="half")),
    ("triton", 2048, dict(dtype="half")),
    ("torch", 8, dict(dtype="half", kv_cache_dtype="fp8")),
    ("triton", 512, dict(kv_cache_dtype="fp8")),
    ("torch", 1024, dict(kv_cache_dtype="fp8")),
    ("torch", 4096, dict()),
]


def spreads(args):
    rows = []
    for impl, tokens, fields in SPREAD_CASES:
        def work(impl=impl, tokens=tokens, fields=fields):
            p = asv_suite.setup_case(impl, tokens, asv_suite.NUM_BLOCKS, **fields)
            res = {}
            for target in (1e-3, 4e-3):
                s = timing.GraphSampler(p.write, target_s=target)
                x = [v * 1e6 for v in s.measure(50)]
                res[f"{target * 1e3:g}ms"] = {"k": s.calls_per_sample, "spread_pct": 100 * spread(x),
                                             "median_us": statistics.median(x), "samples_us": [round(v, 3) for v in x]}
            return res
        out, _ = in_child(work)
        out["case"] = f"{impl} {tokens} {fields}"
        rows.append(out)
        for key in ("1ms", "4ms"):
            if key in out:
                r = out[key]
                print(f"{out['case']} target {key}: k {r['k']} median {r['median_us']:.3f} spread "
                      f"{r['spread_pct']:.2f} %\n   {r['samples_us']}", flush=True)
            else:
                print(out, flush=True)
    return rows


def _synced(fn, times, name):
    """`fn` wrapped to add its synchronized wall time to times[name]."""
    import torch

    def wrapper(*a, **kw):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn(*a, **kw)
        torch.cuda.synchronize()
        times[name] = round(times.get(name, 0.0) + time.perf_counter() - t, 4)
        return out
    return wrapper


def verify_steps(args):
    """Where the verify step's time goes in a fresh process, the same again once warm, and with eager loading."""
    from kvbench import verify as v
    from kvbench.device import ensure_context
    from kvbench import impls, workload

    def work(impl_name, tokens):
        def run():
            times = {}
            t = time.perf_counter()
            ensure_context("cuda")
            times["context"] = round(time.perf_counter() - t, 4)
            for name in ("poison", "stored", "_count_not_poison", "_first_difference"):
                setattr(v, name, _synced(getattr(v, name), times, name))
            v.layouts.gather = _synced(v.layouts.gather, times, "gather")
            v.layouts.scatter = _synced(v.layouts.scatter, times, "scatter")
            impl = impls.get(impl_name)
            case = make_case(impl_name, num_tokens=tokens, device="cuda")
            w = workload.make(case, seed=1)
            write = _synced(impl.bind(w), times, "write")
            out = {}
            for label in ("first verify", "second verify", "third verify"):
                times.clear()
                t = time.perf_counter()
                v.verify(impl, w, write)
                out[label] = {"total": round(time.perf_counter() - t, 4), **times}
            return out
        return run

    rows = []
    for loading in ("LAZY", "EAGER"):
        os.environ["CUDA_MODULE_LOADING"] = loading
        for impl_name in ("torch", "triton"):
            out, wall = in_child(work(impl_name, 16))
            rows.append({"loading": loading, "impl": impl_name, "wall_s": wall, **out})
            print(json.dumps(rows[-1]), flush=True)
    os.environ["CUDA_MODULE_LOADING"] = "LAZY"
    return rows


def graphs(args):
    """Two graphs of the same calls in one process: is the second one slower, and does the first become slower?"""
    def work(impl_name, tokens):
        def run():
            p = prepare(make_case(impl_name, num_tokens=tokens), impl_name)
            s = p.sampler("cudagraph")
            k = s.calls_per_sample
            med = lambda g: independent_per_call_s(g, k) * 1e6  # noqa: E731
            out = {"k": k, "G1": med(s.graph)}
            g2 = timing._capture(p.write, k)
            out["G2 (G1 alive)"] = med(g2)
            out["G1 again"] = med(s.graph)
            del s.graph
            gc.collect()
            out["G2 after G1 deleted"] = med(g2)
            g3 = timing._capture(p.write, k)
            out["G3"] = med(g3)
            return out
        return run

    rows = []
    for impl_name, tokens in (("triton", 16), ("triton", 64), ("torch", 16)):
        out, _ = in_child(work(impl_name, tokens))
        rows.append({"case": f"{impl_name} {tokens}", **out})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _copy_load(seconds: float, stream=None):
    """Enqueue about `seconds` of 256 MiB device copies (no sync), on `stream` if given."""
    import torch

    src = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    with torch.cuda.stream(stream or torch.cuda.current_stream()):
        for _ in range(int(seconds / 1.8e-4)):
            dst.copy_(src)
    return src, dst


def warmup(args):
    """First-sample bias and graph size per warm-up variant, in asv-like fresh processes after idle gaps."""
    import torch

    from kvbench import device, runner

    cases = [("triton", 32768, {}), ("triton", 2048, {"dtype": "float"}), ("triton", 4, {}),
             ("torch", 4096, {"dtype": "float"})]

    def variant(name):
        def work(impl, tokens, fields):
            keep = []
            if name == "as built":  # the timed graph replayed for WARMUP_S before sampling
                pass
            elif name == "no warm-up":
                timing.WARMUP_S = timing.REWARM_S = 0.0
            elif name.startswith("load before calibration"):
                timing.WARMUP_S = timing.REWARM_S = 0.0
                original = timing._warm_up

                def warm(write, calls=3):
                    keep.append(_copy_load(0.1))
                    original(write, calls)
                timing._warm_up = warm
            elif name.startswith("async load after context"):
                timing.WARMUP_S = timing.REWARM_S = 0.0
                seconds = 0.2 if "0.2" in name else 0.1

                def ensure(dev):
                    device.ensure_context(dev)
                    side = torch.cuda.Stream()
                    keep.append((side, _copy_load(seconds, side)))
                runner.ensure_context = ensure
            p = asv_suite.setup_case(impl, tokens, asv_suite.NUM_BLOCKS, **fields)
            s = p.sampler("cudagraph")
            x = _asv_like_samples(s, 20, gap_s=0.002)
            return {"k": s.calls_per_sample, "samples_us": [round(v, 3) for v in x], "steps": p.steps()}
        return work

    rows = []
    for name in ("no warm-up", "as built", "load before calibration 0.1 s",
                 "async load after context 0.1 s", "async load after context 0.2 s"):
        time.sleep(2.0)  # an idle GPU, as after asv's discovery
        for impl, tokens, fields in cases:
            out, wall = in_child(lambda: variant(name)(impl, tokens, fields))
            x = out.get("samples_us", [0])
            late = statistics.median(x[10:]) if len(x) > 10 else 0
            row = {"variant": name, "case": f"{impl} {tokens} {fields}", "k": out.get("k"), "wall_s": round(wall, 3),
                   "first5_over_late": [round(v / late, 3) for v in x[:5]] if late else out,
                   "median_over_late": round(statistics.median(x) / late, 4) if late else None,
                   "steps": out.get("steps")}
            rows.append(row)
            print(json.dumps(row), flush=True)
            time.sleep(0.3)  # asv's gap between processes
    return rows


PLACEMENT_CASES = [  # (implementation, tokens, fields, calls per graph ~ 1 ms): the A/A's movers
    ("triton", 128, {"dtype": "half"}, 250),
    ("triton", 256, {"dtype": "bfloat16"}, 140),
    ("torch", 2, {"dtype": "bfloat16"}, 20),
    ("torch", 32, {"dtype": "half"}, 18),
]


def _fixed_sampler(graph, calls):
    """A GraphSampler around an already captured graph (no probe graph, so at most two graphs per process)."""
    import torch

    s = timing.GraphSampler.__new__(timing.GraphSampler)
    timing._CudaEventSampler.__init__(s)
    s._sleep, s.graph, s.calls_per_sample = torch.cuda._sleep, graph, calls
    return s


def _asv_like_samples(s, n, gap_s=0.0005):
    """Per-call us of n samples with a short host gap after each, as asv takes them."""
    x = []
    for _ in range(n):
        x.append(s.measure(1)[0] * 1e6)
        time.sleep(gap_s)
    return x


def _asv_like_median(s, n=10):
    return round(statistics.median(_asv_like_samples(s, n)), 4)


def placement(args):
    """Is a process's slowness its tensors' placement (copy B in the same process differs from A), the host
    launching late (longer pre-sample sleep), or a GPU not yet warm (longer warm-up)? And the plain sampler."""
    from kvbench import workload

    def work(impl, tokens, fields, calls):
        p = asv_suite.setup_case(impl, tokens, asv_suite.NUM_BLOCKS, **fields)
        write_b = p.impl.bind(workload.make(p.case, seed=7))  # own inputs and caches: another placement
        a = _fixed_sampler(timing._capture(p.write, calls), calls)
        b = _fixed_sampler(timing._capture(write_b, calls), calls)
        timing._busy(a.graph.replay, timing.WARMUP_S)
        out = {"A": [], "B": []}
        for _ in range(3):
            out["A"].append(_asv_like_median(a))
            out["B"].append(_asv_like_median(b))
        timing.SLEEP_CYCLES = 1_000_000
        out["A long pre-sleep"] = _asv_like_median(a)
        timing.SLEEP_CYCLES = 100_000
        timing._busy(lambda: (a.graph.replay(), b.graph.replay()), 0.3)
        out["A after 0.3 s more"] = _asv_like_median(a)
        out["B after 0.3 s more"] = _asv_like_median(b)
        return out

    def plain(impl, tokens, fields):
        p = asv_suite.setup_case(impl, tokens, asv_suite.NUM_BLOCKS, **fields)
        s = p.sampler("cudagraph")
        x = _asv_like_samples(s, 20)
        return {"k": s.calls_per_sample, "median": round(statistics.median(x), 4),
                "spread_pct": round(100 * spread(x), 3)}

    rows = []
    for i in range(args.processes):
        for impl, tokens, fields, calls in PLACEMENT_CASES:
            name = f"{impl} {tokens} {fields.get('dtype')}"
            out, _ = in_child(lambda: work(impl, tokens, fields, calls))
            rows.append({"probe": "A/B", "case": name, "process": i, **out})
            print(json.dumps(rows[-1]), flush=True)
            out, _ = in_child(lambda: plain(impl, tokens, fields))
            rows.append({"probe": "plain sampler", "case": name, "process": i, **out})
            print(json.dumps(rows[-1]), flush=True)
    return rows


TWIN_CASES = [
    ("triton", 128, {"dtype": "half"}, 250),
    ("triton", 256, {"dtype": "bfloat16"}, 140),
    ("triton", 128, {"dtype": "float"}, 130),
    ("torch", 2, {"dtype": "bfloat16"}, 20),
]


def twins(args):
    import dataclasses

    from kvbench import layouts, workload

    def pair(impl, tokens, fields, calls, what):
        p = asv_suite.setup_case(impl, tokens, asv_suite.NUM_BLOCKS, **fields)
        w = p.workload
        if what == "inputs":
            other = workload.make(p.case, seed=7, caches=(w.key_cache, w.value_cache))
        else:
            key_cache, value_cache = layouts.allocate(p.case)
            other = dataclasses.replace(w, key_cache=key_cache, value_cache=value_cache)
        a = _fixed_sampler(timing._capture(p.write, calls), calls)
        b = _fixed_sampler(timing._capture(p.impl.bind(other), calls), calls)
        timing._busy(a.graph.replay, timing.WARMUP_S)
        return {"A": _asv_like_median(a, 20), "B": _asv_like_median(b, 20)}

    def sampler(impl, tokens, fields, variant):
        p = asv_suite.setup_case(impl, tokens, asv_suite.NUM_BLOCKS, **fields)
        if variant == "plain sampler":
            s = p.sampler("cudagraph")
        else:  # torch's graphs: one graph only, or a probe graph captured and dropped first
            if variant == "probe dropped, then K":
                probe = timing._capture(p.write, timing.PROBE_CALLS)
                del probe
            s = _fixed_sampler(timing._capture(p.write, 20), 20)
            timing._busy(s.graph.replay, timing.WARMUP_S)
        return {"k": s.calls_per_sample, "median": _asv_like_median(s, 20)}

    rows = []
    for i in range(args.processes):
        for impl, tokens, fields, calls in TWIN_CASES:
            name = f"{impl} {tokens} {fields.get('dtype')}"
            jobs = {"second inputs": lambda: pair(impl, tokens, fields, calls, "inputs"),
                    "second caches": lambda: pair(impl, tokens, fields, calls, "caches")}
            variants = ["plain sampler"]
            if impl == "torch":
                variants += ["one graph of 20", "probe dropped, then K"]
            for v in variants:
                jobs[v] = lambda v=v: sampler(impl, tokens, fields, v)
            for probe, job in jobs.items():
                out, _ = in_child(job)
                rows.append({"probe": probe, "case": name, "process": i, **out})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def steps(args):
    import torch

    def work(impl, tokens, fields, calls, variant):
        p = asv_suite.setup_case(impl, tokens, asv_suite.NUM_BLOCKS, **fields)
        keep = []
        if variant == "plain sampler":
            s = p.sampler("cudagraph")
        else:
            if variant == "side-stream warm-up first":
                timing._warm_up(p.write)
            elif variant == "eager calls first":
                for _ in range(3):
                    p.write()
                torch.cuda.synchronize()
            elif variant.startswith("probe graph first"):
                probe = _fixed_sampler(timing._capture(p.write, timing.PROBE_CALLS), timing.PROBE_CALLS)
                timing._busy(probe.graph.replay, timing.PROBE_WARMUP_S)
                probe.measure(5)
                keep.append(probe)
            s = _fixed_sampler(timing._capture(p.write, calls), calls)
            if variant == "probe graph first, dropped":
                keep.clear()
            timing._busy(s.graph.replay, timing.WARMUP_S)
        return {"k": s.calls_per_sample, "median": _asv_like_median(s, 20)}

    variants = ["one graph", "side-stream warm-up first", "eager calls first", "probe graph first, kept",
                "probe graph first, dropped", "plain sampler"]
    rows = []
    for i in range(args.processes):
        for impl, tokens, fields, calls in (("torch", 2, {"dtype": "bfloat16"}, 20),
                                            ("triton", 128, {"dtype": "half"}, 250)):
            if impl == "torch" and i >= 3:
                continue
            for v in variants:
                out, _ = in_child(lambda: work(impl, tokens, fields, calls, v))
                rows.append({"variant": v, "case": f"{impl} {tokens} {fields['dtype']}", "process": i, **out})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def _profiled(fn, top=30):
    """(fn's result, its wall seconds, the `top` functions by cumulative time as text)."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    t = time.perf_counter()
    out = prof.runcall(fn)
    wall = time.perf_counter() - t
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(top)
    return out, wall, text.getvalue()


def _prewarm(what):
    """Extra warming in the parent, before any child is forked; CUDA must stay untouched."""
    import torch

    done = {}
    for item in what:
        t = time.perf_counter()
        try:
            if item == "driver":
                from triton.runtime import driver
                driver.active.utils  # noqa: B018 -- Triton's C helpers, compiled or loaded from its cache
            elif item == "backend":
                import pynvml
                from triton.backends.compiler import GPUTarget
                from triton.compiler.compiler import make_backend
                pynvml.nvmlInit()
                major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(pynvml.nvmlDeviceGetHandleByIndex(0))
                make_backend(GPUTarget("cuda", major * 10 + minor, 32)).hash()
            done[item] = round(time.perf_counter() - t, 4)
        except Exception as exc:
            done[item] = f"{type(exc).__name__}: {exc}"
    done["cuda_initialized_after"] = torch.cuda.is_initialized()
    return done


def _imported(name):
    import importlib

    try:
        importlib.import_module(name)
        return True
    except Exception:
        return False


def firstuse(args):
    """A fresh process's preparation, profiled, per implementation; then exiting with 0, 2 and 16 GiB held."""
    rows = [{"prewarm": _prewarm(args.prewarm)}]
    if args.prewarm_modules:  # module names a previous run saw imported by a child's preparation
        t = time.perf_counter()
        failed = [name for name in json.load(open(args.prewarm_modules)) if not _imported(name)]
        rows[0]["prewarm"].update(modules_s=round(time.perf_counter() - t, 3), failed=failed)
    print(json.dumps(rows[-1]), flush=True)
    for impl in args.implementation:
        for i in range(2):
            def work(impl=impl, profile=i == 0):
                from kvbench.device import ensure_context

                t = time.perf_counter()
                ensure_context("cuda")
                context = time.perf_counter() - t
                case = make_case(impl, num_tokens=16, num_blocks=asv_suite.NUM_BLOCKS, device="cuda")
                if profile:
                    before = set(sys.modules)
                    p, wall, text = _profiled(lambda: prepare(case, impl))
                    return {"context_s": context, "prepare_s": wall, "steps_s": p.phases, "profile": text,
                            "imported": sorted(set(sys.modules) - before)}
                t = time.perf_counter()
                p = prepare(case, impl)
                return {"context_s": context, "prepare_s": time.perf_counter() - t, "steps_s": p.phases}
            out, wall = in_child(work)
            rows.append({"impl": impl, "wall_s": wall, **out})
            print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("profile", "imported")}), flush=True)
            if "imported" in out:
                print(f"imported: {len(out['imported'])}: {' '.join(out['imported'])}", flush=True)
            if "profile" in out:
                print(out["profile"], flush=True)
    for gib in (0, 2, 16) * 2:
        def hold(gib=gib):
            import torch
            from kvbench.device import ensure_context

            ensure_context("cuda")
            x = torch.empty(gib << 30, dtype=torch.uint8, device="cuda") if gib else None
            if x is not None:
                x.fill_(1)
            torch.cuda.synchronize()
            return {"held_gib": gib}
        out, wall = in_child(hold)
        rows.append({**out, "exit_s": wall - out["child_done_s"], "wall_s": wall})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["overhead", "state", "spread", "verify", "graphs", "warmup",
                                           "placement", "twins", "steps", "firstuse"])
    ap.add_argument("--implementation", nargs="+", default=["triton", "torch"])
    ap.add_argument("--processes", type=int, default=12, help="placement: fresh processes per case")
    ap.add_argument("--prewarm", nargs="*", default=[], choices=["driver", "backend"],
                    help="firstuse: extra warming of Triton in the parent")
    ap.add_argument("--prewarm-modules", help="firstuse: a JSON list of modules to import in the parent")
    ap.add_argument("--json")
    args = ap.parse_args()
    commands = {"overhead": overhead, "state": state, "spread": spreads, "verify": verify_steps, "graphs": graphs,
                "warmup": warmup, "placement": placement, "twins": twins, "steps": steps,
                "firstuse": firstuse}
    rows = commands[args.what](args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
