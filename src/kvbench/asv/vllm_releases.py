"""vLLM's history, release by release, in one command (`kvbench vllm-history --releases 0.20.0 ... 0.34.0`).

Each release's KV-cache kernels are taken from its wheel without its stack (kvbench.vllm_kernels) into a directory
of their own, checked and tried in a fresh process; then one `asv run` per release, in fresh processes whose
`vllm` is that release's (its directory first on PYTHONPATH and asv's ASV_PYTHONPATH), files the results under the
commit of the release's tag. A release whose kernels cannot load here is skipped with the one-line reason; the
others still run. What runs by default (HISTORY_BENCHMARKS, vLLM's implementations only): the kv ops in vLLM's
benchmark layout (KVCacheWrite, KVCacheWriteBF16) and in that release's served layout with the model presets
(Served: kvbench.ops.served picks the layout by the release's version), MLA and the indexer (MLAWrite,
IndexerWrite, ServedMLA); an op a release lacks is a skip with its reason.

Where vLLM's own repository cannot be cloned (a GPU machine without network), `tags_repo` makes a stand-in: one
empty commit per release, dated at the release's upload to PyPI, tagged v<version>, with fixed authors, so the same
commits (hashes) come out everywhere and results filed on one machine publish on another.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from kvbench.errors import FileProblem, KvbenchError

# PyPI's upload time of each release's first file (https://pypi.org/pypi/vllm/json, read 2026-12-05).
RELEASE_DATES = {
    "0.20.0": "2026-04-27T11:07:22Z", "0.20.1": "2026-05-03T08:24:43Z", "0.20.2": "2026-05-10T07:38:37Z",
    "0.21.0": "2026-05-15T00:08:22Z", "0.22.0": "2026-05-29T10:32:10Z", "0.22.1": "2026-06-05T10:12:16Z",
    "0.23.0": "2026-06-13T09:27:24Z", "0.24.0": "2026-06-30T01:17:52Z", "0.25.0": "2026-07-11T20:01:57Z",
    "0.25.1": "2026-07-14T08:58:23Z", "0.26.0": "2026-07-25T10:40:02Z", "0.27.0": "2026-08-10T21:31:00Z",
    "0.27.1": "2026-08-11T10:59:48Z", "0.28.0": "2026-08-26T10:07:25Z", "0.29.0": "2026-09-09T08:58:32Z",
    "0.30.0": "2026-09-22T05:22:21Z", "0.31.0": "2026-10-05T07:40:41Z", "0.32.0": "2026-10-18T10:03:29Z",
    "0.33.0": "2026-11-02T10:12:56Z", "0.34.0": "2026-11-16T23:50:58Z",
}
HISTORY_BENCHMARKS = r"KVCacheWrite\.time|KVCacheWriteBF16|Served|ServedMLA|MLAWrite|IndexerWrite"
HISTORY_IMPLEMENTATIONS = "vllm,vllm-flash,vllm-triton"


def _git(repo: pathlib.Path, *args: str, date: str | None = None) -> str:
    env = {**os.environ, **({"GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date} if date else {})}
    out = subprocess.run(["git", "-C", str(repo), "-c", "user.name=kvbench", "-c", "user.email=kvbench@localhost",
                          *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise KvbenchError(f"git {' '.join(args)} failed in {repo}: {out.stderr.strip().splitlines()[-1:]}")
    return out.stdout.strip()


def tags_repo(path: str | pathlib.Path, versions=tuple(RELEASE_DATES)) -> pathlib.Path:
    """A git repository whose tags v<version> stand in for vLLM's, one empty commit per release in release order
    (the same hashes on every machine); returned as is where it exists with those tags."""
    repo = pathlib.Path(path)
    unknown = [v for v in versions if v not in RELEASE_DATES]
    if unknown:
        raise KvbenchError(f"vLLM {', '.join(unknown)} is not a release kvbench knows the date of; choose from: "
                           f"{', '.join(RELEASE_DATES)}")
    ordered = sorted(RELEASE_DATES, key=lambda v: RELEASE_DATES[v])
    if (repo / ".git").exists():
        tags = set(_git(repo, "tag").split())
        if {f"v{v}" for v in ordered} <= tags:
            return repo
        raise FileProblem(f"{str(repo)!r} is a git repository without the release tags; remove it or give "
                          f"--vllm-repo a clone of vLLM")
    repo.mkdir(parents=True, exist_ok=True)
    _git(repo, "init", "-q", "-b", "main")
    for version in ordered:  # every known release, so the hashes do not depend on which were asked for
        date = RELEASE_DATES[version]
        _git(repo, "commit", "-q", "--allow-empty", "-m", f"stands in for vLLM v{version}", date=date)
        _git(repo, "tag", f"v{version}")
    return repo


def kernels_of(version: str, into: pathlib.Path, cache: pathlib.Path, index: str | None) -> tuple[pathlib.Path,
                                                                                                str | None]:
    """The release's kernels extracted under `into` (fetched into `cache` when needed), and why they cannot load
    here (tried in a fresh process), or None."""
    from kvbench.vllm_kernels import fetch, load, wheel

    root = into / version
    try:
        kernels = load.read(root)
    except FileProblem:
        kernels = None
    if kernels is None or kernels.version != version:
        wheel.extract(fetch.release(version, cache, index), root)
    outcome = load.probe(root)
    return root, None if outcome["loads"] else outcome["reason"]


def run_release(root: pathlib.Path, sha: str, config: pathlib.Path, machine: str | None, asv_args: list[str]) -> int:
    """`asv run` on the current interpreter with the release under `root` first on the path, filed under `sha`."""
    path = os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "PYTHONPATH": path, "ASV_PYTHONPATH": path}
    env.setdefault("KVBENCH_IMPLEMENTATIONS", HISTORY_IMPLEMENTATIONS)
    if not any(a == "-b" or a.startswith("--bench") for a in asv_args):
        asv_args = ["-b", HISTORY_BENCHMARKS, *asv_args]
    cmd = [sys.executable, "-m", "asv", "run", "--python=same", "--set-commit-hash", sha, "--record-samples",
           f"--config={config}", *(["--machine", machine] if machine else []), *asv_args]
    return subprocess.run(cmd, env=env).returncode


def run(versions: list[str], repo: str | None, into: pathlib.Path, cache: pathlib.Path, index: str | None,
        machine: str | None, asv_args: list[str]) -> int:
    """Each release's kernels, then its asv run under its tag's commit; a line per release. Exit 0 when every
    release ran (failed benchmarks, e.g. vLLM's known defects, are results), 4 when some could not load here, 1
    when an asv run itself failed."""
    from kvbench.asv import vllm_history

    for version in versions:
        if version not in RELEASE_DATES and repo is None:
            raise KvbenchError(f"vLLM {version} is not a release kvbench knows (give --vllm-repo, a clone of vLLM with "
                               f"its tags); known: {', '.join(RELEASE_DATES)}")
    checkout = pathlib.Path(repo) if repo else tags_repo(pathlib.Path.cwd() / ".asv" / "vllm" / "tags-repo")
    config = vllm_history.write_config(str(checkout), pathlib.Path.cwd() / ".asv" / "vllm")
    shas = {v: vllm_history.resolve(str(checkout), v) for v in versions}  # every tag before any work
    unusable = broken = 0
    for version in versions:
        try:
            root, reason = kernels_of(version, into, cache, index)
        except FileProblem as exc:
            root, reason = None, str(exc)
        if reason:
            print(f"vllm {version}: skipped: {reason}", file=sys.stderr, flush=True)
            unusable += 1
            continue
        print(f"vllm {version} -> commit {shas[version][:12]} of {checkout} (kernels {root})", file=sys.stderr,
              flush=True)
        status = run_release(root, shas[version], config, machine, asv_args)
        print(f"vllm {version}: asv run exit {status}", file=sys.stderr, flush=True)
        broken += status not in (0, 2)  # 2: some benchmark failed (a result, shown failed on the site)
    return 1 if broken else 4 if unusable else 0


if __name__ == "__main__":  # python -m kvbench.asv.vllm_releases DIR: the stand-in repository, to publish results
    if len(sys.argv) != 2:
        sys.exit("usage: python -m kvbench.asv.vllm_releases DIR: makes DIR a git repository whose tags v0.20.0 ... "
                 "stand in for vLLM's (the commits kvbench's release histories are filed under)")
    target = pathlib.Path(sys.argv[1])
    if target.is_dir() and not (target / ".git").exists() and any(target.iterdir()):
        sys.exit(f"error: {str(target)!r} is a folder with files and no git repository; give a new or empty one")
    try:
        print(tags_repo(target))
    except (KvbenchError, OSError) as exc:
        sys.exit(f"error: {exc}")
