"""A vLLM wheel's kernels: what the wheel holds (`inspect`) and writing them out with kvbench's stand-ins
(`extract`). Standard library only (asv's install step runs it before torch is importable).

The library is the top-level `vllm/*.so` whose bytes hold both `reshape_and_cache_flash` and `_C_cache_ops` (the
names it registers), not a file name: `_C.abi3.so` up to 0.22, `_C_stable_libtorch.abi3.so` from 0.23 (which also
still ships a `_C.abi3.so` without the cache ops). The Triton write op is taken from its path; the other modules
it imports lazily (0.25+: `int4_per_token_head.py`, for INT4 caches only) are not, so INT4 is not available.
"""

from __future__ import annotations

import email.parser
import lzma
import pathlib
import re
import shutil
import zipfile

from kvbench.errors import FileProblem
from kvbench.vllm_kernels import MANIFEST, Kernels, binary

NEEDLES = (b"reshape_and_cache_flash", b"_C_cache_ops")
TRITON_PATHS = ("vllm/v1/attention/ops/triton_reshape_and_cache_flash.py",
                "vllm/attention/ops/triton_reshape_and_cache_flash.py")  # before vLLM moved it under v1/ (Jan 2026)
STANDIN = pathlib.Path(__file__).with_name("standin")
INSTALLER = "kvbench vllm-kernels\n"


def _open(path: pathlib.Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FileProblem(f"{str(path)!r} is not a readable wheel ({exc})") from None


def _metadata(whl: zipfile.ZipFile, path: pathlib.Path):
    """The wheel's METADATA as an email message."""
    name = next((n for n in whl.namelist() if re.fullmatch(r"vllm-[^/]+\.dist-info/METADATA", n)), None)
    if name is None:
        raise FileProblem(f"{path.name} has no vllm-*.dist-info/METADATA: not a vLLM wheel")
    return email.parser.Parser().parsestr(whl.read(name).decode("utf-8", "replace"))


def torch_pin(requires: list[str]) -> str | None:
    """X of an unconditional `Requires-Dist: torch==X`, or None."""
    for req in requires:
        found = re.fullmatch(r"torch\s*==\s*([^\s;,]+)", req.strip())
        if found:
            return found.group(1)
    return None


def cuda_from_metadata(version: str, requires: list[str]) -> int | None:
    """The CUDA major a wheel names: a local version +cu130 (13), else nvidia-*-cu13 / [cu13] requirements."""
    found = re.search(r"\+(?:.*\.)?cu(\d+)(?:\.|$)", version)
    if found:
        return int(found.group(1)[:-1])
    majors = {int(m) for req in requires for m in re.findall(r"\bcu(\d{2})\b", req.split(";")[0])}
    return max(majors) if majors else None


def _library(whl: zipfile.ZipFile, path: pathlib.Path) -> tuple[str, bytes]:
    """(member name, bytes) of the library that registers torch.ops._C_cache_ops."""
    candidates = sorted((n for n in whl.namelist() if re.fullmatch(r"vllm/[^/]+\.so", n)),
                        key=lambda n: (not n.startswith("vllm/_C"), n))
    for name in candidates:
        data = whl.read(name)
        if all(needle in data for needle in NEEDLES):
            return name, data
    raise FileProblem(f"{path.name} has no library registering torch.ops._C_cache_ops "
                      f"(looked in {', '.join(candidates) or 'no vllm/*.so'})")


def inspect(path: str | pathlib.Path, commit: str | None = None) -> Kernels:
    """What the wheel at `path` would give: its version, library, what the library needs, its Triton op."""
    path = pathlib.Path(path)
    with _open(path) as whl:
        meta = _metadata(whl, path)
        version, requires = meta["Version"] or "", meta.get_all("Requires-Dist") or []
        member, data = _library(whl, path)
        triton = next((p for p in TRITON_PATHS if p in set(whl.namelist())), None)
    code = binary.gpu_code(data)
    cuda = binary.cuda_major(data)
    if cuda is None and code:  # GPU code but no libcudart named (a static runtime): the wheel says which CUDA
        cuda = cuda_from_metadata(version, requires)
    name = member.rsplit("/", 1)[1]
    return Kernels(version=version, wheel=path.name, library=name, stable_abi="stable_libtorch" in name,
                   torch_pin=torch_pin(requires), cuda=cuda, cubins=list(code.cubins), ptx=list(code.ptx),
                   triton=triton, commit=commit)


def _clear(root: pathlib.Path) -> None:
    """Remove the vllm tree and dist-info kvbench wrote under `root` before; refuse to touch any other vllm."""
    package = root / "vllm"
    if package.exists() and not (package / MANIFEST).exists():
        raise FileProblem(f"{str(package)!r} exists and was not written by kvbench vllm-kernels; remove it or "
                          f"choose another directory")
    shutil.rmtree(package, ignore_errors=True)
    for info in root.glob("vllm-*.dist-info"):
        if (info / "INSTALLER").exists() and (info / "INSTALLER").read_text() == INSTALLER:
            shutil.rmtree(info)


def _dist_info(root: pathlib.Path, version: str, files: list[str]) -> None:
    """vllm-<version>.dist-info: METADATA (importlib.metadata's version), INSTALLER, RECORD (pip can uninstall)."""
    info = root / f"vllm-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\nSummary: vLLM {version}'s "
                                   f"KV-cache kernels only, with kvbench's stand-ins (kvbench vllm-kernels)\n")
    (info / "INSTALLER").write_text(INSTALLER)
    names = files + [f"{info.name}/METADATA", f"{info.name}/INSTALLER", f"{info.name}/RECORD"]
    (info / "RECORD").write_text("".join(f"{n},,\n" for n in names))


def pack(library: pathlib.Path, kernels: Kernels, arch: int | None, compress: bool) -> None:
    """Make the extracted library small enough to carry to a machine without network: keep only GPU `arch`'s code
    (kvbench.vllm_kernels.binary.keep_only) and/or xz-compress it (<library>.xz; the stand-in `vllm._custom_ops`
    unpacks it beside itself before loading)."""
    data = bytearray(library.read_bytes())
    if arch is not None:
        code = binary.keep_only(data, arch)
        if not code:
            raise FileProblem(f"{kernels.label} has no code for sm_{arch}; it has {kernels_code(kernels)}")
        kernels.cubins, kernels.ptx = list(code.cubins), list(code.ptx)
    if compress:
        with lzma.open(f"{library}.xz", "wb", preset=6) as out:
            out.write(data)
        library.unlink()
    else:
        library.write_bytes(data)
    kernels.packed = " ".join(filter(None, [f"sm_{arch}" if arch is not None else "", "xz" if compress else ""]))


def kernels_code(kernels: Kernels) -> str:
    return binary.GpuCode(tuple(kernels.cubins), tuple(kernels.ptx)).describe()


def extract(path: str | pathlib.Path, root: str | pathlib.Path, commit: str | None = None, arch: int | None = None,
            compress: bool = False) -> Kernels:
    """Write the wheel's library and Triton op with kvbench's stand-in `vllm` and a dist-info under `root`
    (replacing what kvbench wrote there before): `root` is then a directory to put first on a Python path. With
    `arch` and/or `compress`, the library is packed to be carried (`pack`)."""
    path, root = pathlib.Path(path), pathlib.Path(root)
    kernels = inspect(path, commit)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _clear(root)
        shutil.copytree(STANDIN / "vllm", root / "vllm", ignore=shutil.ignore_patterns("__pycache__"))
        with _open(path) as whl:
            for member in filter(None, (f"vllm/{kernels.library}", kernels.triton)):
                (root / member).parent.mkdir(parents=True, exist_ok=True)
                with whl.open(member) as src, open(root / member, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
        (root / "vllm" / kernels.library).chmod(0o755)
        if arch is not None or compress:
            pack(root / "vllm" / kernels.library, kernels, arch, compress)
        for package in [root / "vllm", *(root / "vllm").rglob("*")]:
            if package.is_dir() and package.name != "__pycache__" and not (package / "__init__.py").exists():
                (package / "__init__.py").write_text("")
        kernels.save(root)
        files = sorted(p.relative_to(root).as_posix() for p in (root / "vllm").rglob("*") if p.is_file())
        _dist_info(root, kernels.version, files)
    except OSError as exc:
        raise FileProblem(f"cannot write {kernels.label} under {str(root)!r} ({exc.strerror or exc})") from None
    return kernels
