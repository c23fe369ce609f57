"""The two revisions of `kvbench compare`: resolved with git before any work, exported with `git archive` into a
temporary folder of their own (the user's checkout, index and worktree list are never touched), removed at the end."""

from __future__ import annotations

import dataclasses
import pathlib
import shutil
import subprocess
import tempfile

from kvbench.errors import KvbenchError

TEMP_PREFIX = "kvbench-compare-"


class RevisionError(KvbenchError):
    """A revision that does not resolve to a commit, or whose tree cannot be used (exit code 2)."""


@dataclasses.dataclass
class Revision:
    label: str  # "A" or "B"
    name: str  # as the user gave it
    sha: str
    tree: pathlib.Path | None = None  # the exported tree, once exported

    @property
    def short(self) -> str:
        return self.sha[:8]

    def describe(self) -> str:
        return f"revision {self.label} ({self.name}, {self.short})"


def _git(repo: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise RevisionError("git is not installed; kvbench compare needs it to export revisions") from None


def repository(path: str) -> pathlib.Path:
    """The top folder of the git repository at `path`."""
    run = _git(pathlib.Path(path), "rev-parse", "--show-toplevel")
    if run.returncode != 0:
        raise RevisionError(f"{path!r} is not inside a git repository (kvbench compare compares commits of one)")
    return pathlib.Path(run.stdout.strip())


def resolve(repo: pathlib.Path, label: str, name: str) -> Revision:
    """The commit `name` names (anything `git rev-parse` accepts), or a one-line RevisionError."""
    run = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{name}^{{commit}}")
    if run.returncode != 0 or not run.stdout.strip():
        raise RevisionError(f"revision {label} {name!r} is not a commit of {repo} (git rev-parse)")
    return Revision(label, name, run.stdout.strip())


def dirty(repo: pathlib.Path) -> bool:
    """Whether tracked files have uncommitted changes (which a comparison of commits does not see)."""
    return bool(_git(repo, "status", "--porcelain", "--untracked-files=no").stdout.strip())


def make_root() -> pathlib.Path:
    return pathlib.Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))


def export(repo: pathlib.Path, rev: Revision, into: pathlib.Path) -> None:
    """`git archive SHA | tar -x -C into/<label>`: the revision's committed tree, nothing else."""
    tree = into / rev.label.lower()
    tree.mkdir()
    archive = subprocess.Popen(["git", "-C", str(repo), "archive", "--format=tar", rev.sha],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    untar = subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout, capture_output=True)
    archive.stdout.close()
    error = archive.stderr.read().decode(errors="replace").strip()
    archive.stderr.close()
    if archive.wait() != 0 or untar.returncode != 0:
        detail = error or untar.stderr.decode(errors="replace").strip()
        raise RevisionError(f"{rev.describe()}: its tree could not be exported ({detail.splitlines()[0]})")
    rev.tree = tree


def remove(root: pathlib.Path | None) -> None:
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)
