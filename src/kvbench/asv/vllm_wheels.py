"""vLLM's history from vLLM's per-commit wheels, for asv (asv.vllm-commits.conf.json).

vLLM's CI publishes a wheel for every main-branch commit since v0.5.3 at https://wheels.vllm.ai/<full commit hash>/,
with a PEP 503 index per commit directory: `<commit>/vllm/index.html` lists the default variant's wheels (relative
links to `<commit>/vllm-<version>-<tags>.whl`), `<commit>/<variant>/vllm/index.html` the other variants' (cu130,
cpu, ...). vLLM's docs (docs/getting_started/installation/gpu.cuda.inc.md, "Install specific revisions") install one
with `uv pip install vllm --torch-backend=auto --extra-index-url https://wheels.vllm.ai/${VLLM_COMMIT}` (full hash)
and say pip is not supported with that extra index: pip merges it with PyPI and takes the newest version. Here pip
is given the commit's index as the *only* index and only for vllm itself (`pip download --no-deps`), so nothing
else can win. Commits from before the per-commit index (older docs: `pip install https://wheels.vllm.ai/
${VLLM_COMMIT}/vllm-1.0.0.dev-cp38-abi3-manylinux1_x86_64.whl`, a placeholder name over the real version) are
fetched by that URL and renamed after the version in their metadata.

Installing a commit does not install vLLM: only the wheel's KV-cache kernels are taken (kvbench.vllm_kernels:
the library that registers torch.ops._C_cache_ops and the Triton write op, with kvbench's stand-in `vllm` package
and a dist-info naming the wheel's version) and written into the environment's site-packages. torch, Triton and
the rest are the machine's own: the environment sees the site-packages of the Python that wrote the configuration
(appended after its own, through a .pth), and kvbench's requirements are installed only where missing. Each
install ends by loading the kernels in a fresh process of the environment: kernels that cannot load here (torch,
CUDA, GPU architecture) fail the install with that one-line reason.

asv runs this file with the environment's own python (standard library only; `install` imports
kvbench.vllm_kernels from the checkout, which is standard library only too):

    download --commit SHA --dest DIR   the commit's wheel into DIR (asv's build cache: {build_cache_dir})
    install --wheel FILE --kvbench DIR the wheel's kernels, the host's site-packages, kvbench's requirements, and a
                                       .pth to DIR/src
    config --vllm-repo CHECKOUT        writes asv.vllm-commits.conf.json with absolute paths (run from anywhere)
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import urllib.parse
import urllib.request
import zipfile

DEFAULT_INDEX = "https://wheels.vllm.ai"
INDEX_ENV = "KVBENCH_VLLM_WHEELS"  # overrides DEFAULT_INDEX where --index is not given
LEGACY_WHEEL = "vllm-1.0.0.dev-cp38-abi3-manylinux1_x86_64.whl"
TEMPLATE = "asv.vllm-commits.conf.json"
PTH = "kvbench-checkout.pth"
HOST_PTH = "kvbench-host-site.pth"  # the host's site-packages, after the environment's own
KVBENCH_ROOT = pathlib.Path(__file__).resolve().parents[3]  # src/kvbench/asv/vllm_wheels.py -> the checkout


class WheelError(RuntimeError):
    pass


def index_base(index: str | None = None) -> str:
    return (index or os.environ.get(INDEX_ENV) or DEFAULT_INDEX).rstrip("/")


def _check_commit(commit: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{40}", commit):
        raise WheelError(f"{commit!r} is not a full 40-character commit hash (wheels.vllm.ai is keyed by full hashes)")
    return commit


def index_url(commit: str, index: str | None = None, variant: str = "") -> str:
    """The PEP 503 index of `commit`'s wheels: <base>/<commit>/ or <base>/<commit>/<variant>/."""
    url = f"{index_base(index)}/{_check_commit(commit)}/"
    return url + (f"{variant.strip('/')}/" if variant else "")


def legacy_url(commit: str, index: str | None = None) -> str:
    return f"{index_base(index)}/{_check_commit(commit)}/{LEGACY_WHEEL}"


def wheel_version(path: pathlib.Path) -> str:
    """The Version: of a wheel's METADATA (the file name may carry a placeholder)."""
    with zipfile.ZipFile(path) as whl:
        name = next((n for n in whl.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)), None)
        if name is None:
            raise WheelError(f"{path.name} has no .dist-info/METADATA")
        for line in whl.read(name).decode("utf-8", "replace").splitlines():
            if line.startswith("Version:"):
                return line.split(":", 1)[1].strip()
    raise WheelError(f"{path.name}: no Version in METADATA")


def check_version(version: str, commit: str) -> None:
    """A nightly's local version names its commit (0.11.1rc6.dev16+g933cdea44.cu129): it must be this one."""
    found = re.search(r"\+g([0-9a-f]{7,40})", version)
    if found and not commit.startswith(found.group(1)):
        raise WheelError(f"the wheel's version {version} names commit {found.group(1)}, not {commit[:12]}")


def _pip(*args: str, cwd: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.run(cmd, cwd=cwd, env=env, stdout=2)  # pip on stderr: stdout is a caller's report


def index_wheels(url: str) -> set[str]:
    """File names of the wheels <url>vllm/ (a PEP 503 project page) links to."""
    page = url + "vllm/"
    if page.startswith("file:"):  # a local copy of the layout: no server to add index.html
        page += "index.html"
    with urllib.request.urlopen(page, timeout=120) as response:
        html = response.read().decode("utf-8", "replace")
    hrefs = re.findall(r"""href\s*=\s*["']([^"']+)["']""", html)
    return {urllib.parse.unquote(h.split("#")[0].rsplit("/", 1)[-1]) for h in hrefs if ".whl" in h}


def _fetch(url: str, dest: pathlib.Path) -> None:
    with urllib.request.urlopen(url, timeout=600) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)


def download(commit: str, dest: pathlib.Path, index: str | None = None, variant: str = "") -> pathlib.Path:
    """`commit`'s vllm wheel for this interpreter and platform into `dest` (emptied of wheels first): its path.

    pip picks the wheel (tags, platform) from the commit's index alone; --only-binary=:all: so a commit without a
    wheel fails instead of building vLLM from source. The file is named after the version in its metadata."""
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    url = index_url(commit, index, variant)
    # The commit's index must be pip's only source of vllm (the pitfall vLLM's docs warn of): the extra indexes and
    # find-links of pip's configuration or environment are replaced by that same index.
    env = {**os.environ, "PIP_EXTRA_INDEX_URL": url, "PIP_FIND_LINKS": url + "vllm/"}
    with tempfile.TemporaryDirectory(prefix="vllm-wheel-") as tmp:
        # cwd: a vLLM checkout (asv's build dir) has a vllm/ directory pip could mistake for the requirement
        got = _pip("download", "--no-deps", "--only-binary=:all:", "--pre", "--no-cache-dir", "--index-url", url,
                   "--dest", tmp, "vllm", cwd=tmp, env=env)
        if got.returncode == 0:
            names = [w.name for w in pathlib.Path(tmp).glob("*.whl")]
            listed = index_wheels(url)
            if not names or not set(names) <= listed:
                raise WheelError(f"pip fetched {names}, which {url}vllm/ does not list ({sorted(listed)})")
        else:
            if variant or platform.machine() != "x86_64":
                raise WheelError(f"no vllm wheel for this platform at {url}")
            legacy = legacy_url(commit, index)
            print(f"no wheel in {url}; trying the pre-index name {legacy}", file=sys.stderr, flush=True)
            try:
                _fetch(legacy, pathlib.Path(tmp) / LEGACY_WHEEL)
            except OSError as exc:
                raise WheelError(f"no vllm wheel for commit {commit} at {url} nor at {legacy} ({exc})") from exc
        wheels = list(pathlib.Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise WheelError(f"expected one wheel from {url}, got {[w.name for w in wheels]}")
        version = wheel_version(wheels[0])
        check_version(version, commit)
        parts = wheels[0].name[: -len(".whl")].split("-")
        parts[1] = version.replace("-", "_")
        target = dest / ("-".join(parts) + ".whl")
        shutil.move(str(wheels[0]), target)
    print(f"vllm {version} for {commit[:12]} -> {target}", file=sys.stderr, flush=True)
    return target


def kvbench_requirements(root: pathlib.Path, extras: list[str]) -> list[str]:
    """kvbench's dependencies (and those of `extras`) from its pyproject.toml."""
    import tomllib

    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    reqs = list(project.get("dependencies", []))
    for extra in extras:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    return reqs


def host_site_dirs() -> list[str]:
    """This interpreter's site-packages directories, in path order (a venv's, then its base's where it sees them):
    where the machine's torch and Triton are."""
    return [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages") and os.path.isdir(p)]


def install(wheel: pathlib.Path, kvbench: pathlib.Path | None = None, extras: list[str] = (),
            host_site: list[str] = ()) -> str:
    """The wheel's kernels into this environment (no vLLM dependency), the host's site-packages after its own,
    kvbench's requirements where missing and its src/ on the path; then the kernels loaded in a fresh process."""
    root = (kvbench or KVBENCH_ROOT).resolve()
    sys.path.insert(0, str(root / "src"))
    from kvbench.errors import KvbenchError
    from kvbench.vllm_kernels import load, wheel as kernels_wheel

    site = pathlib.Path(sysconfig.get_paths()["purelib"])
    cwd = tempfile.gettempdir()
    (site / HOST_PTH).write_text("".join(f"import site; site.addsitedir({d!r})\n" for d in host_site))
    reqs = kvbench_requirements(root, list(extras)) if kvbench else []
    if reqs and _pip("install", *reqs, cwd=cwd).returncode != 0:
        raise WheelError(f"pip could not install kvbench's requirements {reqs}")
    if kvbench:
        (site / PTH).write_text(str(root / "src") + "\n")
    try:
        kernels = kernels_wheel.extract(wheel, site)
    except KvbenchError as exc:
        raise WheelError(str(exc)) from None
    outcome = load.probe(site)
    if not outcome["loads"]:
        raise WheelError(outcome["reason"])
    triton = f"; its Triton op does not import: {outcome['triton_error']}" if outcome["triton_error"] else ""
    print(f"installed vllm {kernels.version}'s kernels ({kernels.library}: {', '.join(outcome['ops'])}{triton})",
          flush=True)
    return kernels.version


def write_config(vllm_repo: str | os.PathLike, out_dir: pathlib.Path | None = None, *, index: str | None = None,
                 variant: str = "", extras: str = "gpu", benchmark_dir: str | os.PathLike | None = None,
                 root: pathlib.Path = KVBENCH_ROOT) -> pathlib.Path:
    """asv.vllm-commits.conf.json for `vllm_repo`, with absolute paths, at out_dir/asv.conf.json (default: the
    template's .asv/vllm-commits under `root`; env, results and html go there). Runs on the host, with kvbench."""
    from kvbench.asv import config_file

    if not (root / TEMPLATE).exists():
        raise WheelError(f"{TEMPLATE} not found in {root}: run this from a kvbench checkout")
    out_dir = pathlib.Path(out_dir).resolve() if out_dir else root / ".asv" / "vllm-commits"
    fills = {"@KVBENCH_ROOT@": str(root.resolve()), "@INDEX@": index_base(index), "@VARIANT@": variant.strip("/"),
             "@EXTRAS@": extras, "@HOST_SITE@": os.pathsep.join(host_site_dirs())}
    return config_file.write(out_dir / "asv.conf.json", TEMPLATE, root, out_dir, fills,
                             repo=pathlib.Path(vllm_repo).resolve(),
                             benchmark_dir=benchmark_dir and pathlib.Path(benchmark_dir).resolve())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    dl = sub.add_parser("download", help="the commit's wheel into --dest (asv build_command)")
    dl.add_argument("--commit", required=True)
    dl.add_argument("--dest", required=True, type=pathlib.Path)
    dl.add_argument("--index", default="", help=f"base URL (default ${INDEX_ENV} or {DEFAULT_INDEX})")
    dl.add_argument("--variant", default="", help="variant subdirectory (cu130, cpu, ...); empty: the default")
    ins = sub.add_parser("install", help="the wheel's kernels and kvbench's requirements (asv install_command)")
    ins.add_argument("--wheel", required=True, type=pathlib.Path)
    ins.add_argument("--kvbench", type=pathlib.Path, help="kvbench checkout to put on the path")
    ins.add_argument("--extras", default="", help="kvbench extras to install, comma-separated")
    ins.add_argument("--host-site", default="", help=f"site-packages to append to the environment's path, "
                                                     f"separated by {os.pathsep!r} (the machine's torch)")
    cfg = sub.add_parser("config", help="write the asv configuration for a vLLM checkout")
    cfg.add_argument("--vllm-repo", required=True)
    cfg.add_argument("--out-dir", type=pathlib.Path, help="default: <kvbench>/.asv/vllm-commits")
    cfg.add_argument("--index", default="", help=f"base URL (default ${INDEX_ENV} or {DEFAULT_INDEX})")
    cfg.add_argument("--variant", default="")
    cfg.add_argument("--extras", default="gpu")
    cfg.add_argument("--benchmark-dir", help="default: <kvbench>/benchmarks")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "download":
            download(args.commit, args.dest, args.index or None, args.variant)
        elif args.cmd == "install":
            install(args.wheel, args.kvbench, [e for e in args.extras.split(",") if e],
                    [d for d in args.host_site.split(os.pathsep) if d])
        else:
            print(write_config(args.vllm_repo, args.out_dir, index=args.index or None, variant=args.variant,
                               extras=args.extras, benchmark_dir=args.benchmark_dir))
    except WheelError as exc:
        print(f"vllm_wheels: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
