"""vLLM's history release by release in one command (kvbench vllm-history --releases): each release's kernels
taken from its wheel, one asv run per release in fresh processes, filed under the release's tag. Offline, on a CPU:
two releases of a compiled CPU library (tests/test_vllm_kernels.py builds it) from a local index."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from kvbench.asv import vllm_releases
from test_vllm_kernels import build_cpu_library, index, vllm_wheel

ROOT = pathlib.Path(__file__).resolve().parents[1]

# vLLM's flash op as a CPU implementation (the test library's kernel runs on the CPU).
PLUGIN = """
from kvbench import impls
from kvbench.impls.vllm_cuda import VllmFlash


class VllmFlashOnCpu(VllmFlash):
    name = "vllm-flash-cpu"
    devices = ("cpu",)


impls.register(VllmFlashOnCpu())
"""


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def test_the_stand_in_tags_repo_is_the_same_everywhere(tmp_path):
    a = vllm_releases.tags_repo(tmp_path / "a")
    b = vllm_releases.tags_repo(tmp_path / "b", versions=["0.34.0"])  # every release, whichever were asked for
    assert git(a, "rev-parse", "v0.34.0") == git(b, "rev-parse", "v0.34.0")
    assert git(a, "log", "-1", "--format=%cI", "v0.26.0") == "2026-07-25T10:40:02+00:00"
    tags = git(a, "tag").split()
    assert len(tags) == len(vllm_releases.RELEASE_DATES) == 20
    assert git(a, "rev-list", "--count", "main") == "20"
    assert vllm_releases.tags_repo(tmp_path / "a") == tmp_path / "a"  # reused as it is


def test_the_stand_in_tags_from_the_command_line_match_the_committed_history(tmp_path):
    """`python -m kvbench.asv.vllm_releases DIR` (what data/vllm-history-h100/README.md publishes with) gives the
    commits the committed results are filed under; a folder with other files in it is refused, untouched."""
    run = subprocess.run([sys.executable, "-m", "kvbench.asv.vllm_releases", str(tmp_path / "tags")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    filed = {p.name.split("-")[0] for p in (ROOT / "data/vllm-history-h100/results/h100-device").glob("*-*.json")}
    assert {git(tmp_path / "tags", "rev-parse", "--short=8", f"v{v}") for v in ("0.20.0", "0.26.0", "0.34.0")} <= filed
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    run = subprocess.run([sys.executable, "-m", "kvbench.asv.vllm_releases", str(tmp_path / "busy")],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "is a folder with files and no git repository" in run.stderr
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["notes.txt"]


def test_an_unknown_release_without_a_vllm_clone_is_one_line(capsys):
    from kvbench import cli

    assert cli.main(["vllm-history", "--releases", "0.19.9"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "vLLM 0.19.9 is not a release kvbench knows" in err


@pytest.mark.slow
def test_two_releases_each_with_its_own_kernels_under_its_tag(tmp_path):
    library = build_cpu_library(tmp_path.parent)
    url = index(tmp_path / "index", [vllm_wheel(tmp_path / "w", v, library) for v in ("0.98.0", "0.99.0")])
    repo = tmp_path / "vllm"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for v in ("0.98.0", "0.99.0"):
        git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", v)
        git(repo, "tag", f"v{v}")
    work = tmp_path / "kvbench"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(work)], check=True)
    (tmp_path / "plugin").mkdir()
    (tmp_path / "plugin" / "flash_on_cpu.py").write_text(PLUGIN)
    log = tmp_path / "state.jsonl"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "plugin"), "KVBENCH_PLUGINS": "flash_on_cpu",
           "KVBENCH_IMPLEMENTATIONS": "vllm-flash-cpu", "KVBENCH_NUM_TOKENS": "16", "KVBENCH_DTYPES": "float",
           "KVBENCH_NUM_BLOCKS": "64", "KVBENCH_STATE_LOG": str(log), "HOME": str(tmp_path),
           "KVBENCH_CACHE_DIR": str(tmp_path / "cache")}
    kv = [sys.executable, "-m", "kvbench.cli"]
    subprocess.run([*kv, "asv-machine", "--machine", "cpu-test"], cwd=work, env=env, check=True, capture_output=True)
    run = subprocess.run([*kv, "vllm-history", "--releases", "0.98.0", "0.99.0", "--vllm-repo", str(repo),
                          "--index", url, "--kernels-dir", str(tmp_path / "kernels"), "--machine", "cpu-test", "--",
                          "-b", r"KVCacheWrite\.time_no_graph"], cwd=work, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for v in ("0.98.0", "0.99.0"):
        sha = git(repo, "rev-parse", f"v{v}")
        assert f"vllm {v} -> commit {sha[:12]}" in run.stderr
        files = list((work / ".asv/vllm/results/cpu-test").glob(f"{sha[:8]}*.json"))
        assert len(files) == 1, v
        data = json.loads(files[0].read_text())
        values = dict(zip(data["result_columns"], data["results"]["benchmarks.KVCacheWrite.time_no_graph"]))
        assert values["result"][0] > 0  # kv auto: the release's CPU kernel, verified and timed
    ran = [json.loads(line) for line in log.read_text().splitlines()]
    versions = [e.get("vllm_version") for e in ran if e.get("status") == "ok"]
    assert versions.count("0.98.0") >= 1 and versions.count("0.99.0") >= 1, ran
