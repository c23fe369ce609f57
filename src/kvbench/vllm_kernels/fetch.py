"""Getting a vLLM wheel: a release with `pip download --no-deps` (PyPI, or the PEP 503 index --index names), a
main-branch commit from vLLM's per-commit index (kvbench.asv.vllm_wheels: https://wheels.vllm.ai/<commit>/, or
--index / $KVBENCH_VLLM_WHEELS), or a file or URL given as it is. Wheels are kept in a cache directory and not
fetched again. Standard library only.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile

from kvbench.errors import FileProblem, KvbenchError

VERSION = re.compile(r"\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?(\+[A-Za-z0-9.]+)?")
COMMIT = re.compile(r"[0-9a-fA-F]{40}")


def parse(text: str) -> tuple[str, str]:
    """("version", "0.34.0") or ("commit", full hash) for a command-line argument; KvbenchError (exit 2) else."""
    if COMMIT.fullmatch(text):
        return "commit", text.lower()
    version = text[1:] if text[:1] in ("v", "V") else text
    if VERSION.fullmatch(version):
        return "version", version
    if re.fullmatch(r"[0-9a-fA-F]{7,39}", text):
        raise KvbenchError(f"{text!r}: give a commit as its full 40-character hash (vLLM's per-commit wheels "
                           f"are keyed by full hashes)")
    raise KvbenchError(f"{text!r} is neither a vLLM version (such as 0.34.0) nor a full 40-character commit hash")


def wheel_version(path: pathlib.Path) -> str | None:
    from kvbench.asv import vllm_wheels

    try:
        return vllm_wheels.wheel_version(path)
    except (vllm_wheels.WheelError, OSError, ValueError, zipfile.BadZipFile):
        return None


def cached(cache: pathlib.Path, version: str) -> pathlib.Path | None:
    """A wheel of vllm `version` already in `cache` (file names may carry a build tag: vllm-0.23.0-2-...)."""
    for path in sorted(cache.glob(f"vllm-{version}-*.whl")):
        if wheel_version(path) == version:
            return path
    return None


def _pip_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["no output"])[-1]


def release(version: str, cache: pathlib.Path, index: str | None = None) -> pathlib.Path:
    """The wheel of vllm `version` for this platform, from `cache` or `pip download --no-deps` into it."""
    hit = cached(cache, version)
    if hit:
        return hit
    where = index or "pip's index (PyPI unless configured otherwise)"
    cache.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
           "--disable-pip-version-check", f"vllm=={version}"]
    env = dict(os.environ)
    if index:  # the index given is pip's only source of vllm
        cmd += ["--index-url", index]
        env["PIP_EXTRA_INDEX_URL"] = index
        env.pop("PIP_FIND_LINKS", None)
    print(f"kvbench: fetching vllm {version} from {where} (pip download --no-deps)", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
        got = subprocess.run(cmd + ["--dest", tmp], cwd=tmp, env=env, capture_output=True, text=True)
        wheels = list(pathlib.Path(tmp).glob("*.whl"))
        if got.returncode != 0 or len(wheels) != 1:
            raise FileProblem(f"no vllm {version} wheel for this platform from {where} (pip: {_pip_error(got.stderr)})")
        if wheel_version(wheels[0]) != version:
            raise FileProblem(f"{wheels[0].name} from {where} is vllm {wheel_version(wheels[0])}, not {version}")
        target = cache / wheels[0].name
        shutil.move(str(wheels[0]), target)
    return target


def commit(sha: str, cache: pathlib.Path, index: str | None = None, variant: str = "") -> pathlib.Path:
    """The wheel vLLM's CI built for commit `sha`, from `cache` or its per-commit index (see vllm_wheels)."""
    from kvbench.asv import vllm_wheels

    dest = cache / sha / variant.strip("/") if variant else cache / sha
    kept = sorted(dest.glob("*.whl"))
    if len(kept) == 1:
        return kept[0]
    print(f"kvbench: fetching the wheel of vLLM commit {sha[:12]} from {vllm_wheels.index_url(sha, index, variant)}",
          file=sys.stderr, flush=True)
    try:
        return vllm_wheels.download(sha, dest, index, variant)
    except (vllm_wheels.WheelError, OSError) as exc:
        raise FileProblem(str(exc).splitlines()[0]) from None


def given(location: str, cache: pathlib.Path) -> pathlib.Path:
    """A wheel named on the command line: a file, a file:// URL, or an http(s) URL (downloaded into `cache`)."""
    parts = urllib.parse.urlparse(location)
    if parts.scheme in ("http", "https"):
        target = cache / "urls" / urllib.parse.unquote(parts.path.rsplit("/", 1)[-1])
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with urllib.request.urlopen(location, timeout=600) as response, open(f"{target}.part", "wb") as out:
                    shutil.copyfileobj(response, out, 1 << 20)
            except OSError as exc:
                raise FileProblem(f"--wheel {location!r} cannot be fetched ({exc})") from None
            os.replace(f"{target}.part", target)
        return target
    path = pathlib.Path(urllib.parse.unquote(parts.path) if parts.scheme == "file" else location)
    if path.is_dir():
        raise FileProblem(f"--wheel {location!r} is a directory; give a .whl file")
    if not path.is_file():
        raise FileProblem(f"--wheel {location!r} does not exist")
    return path
