"""Using extracted kernels: `activate` them in this process (their directory first on sys.path, then
`vllm._custom_ops`, which checks and loads the library), or `probe` them in a fresh process, which is how the CLI
and asv's install step find out whether they load here without risking their own process (a library built for
another torch can crash the one that loads it).

Another process uses them with `PYTHONPATH=<root>` (first, ahead of any installed vllm).
"""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import subprocess
import sys

from kvbench.errors import DeviceUnavailable, FileProblem, KvbenchError
from kvbench.vllm_kernels import MANIFEST, TRITON_MODULE, Kernels

WRITE_OPS = ("reshape_and_cache", "reshape_and_cache_flash", "concat_and_cache_mla", "indexer_k_quant_and_cache")


def read(root: str | pathlib.Path) -> Kernels:
    """The manifest of the kernels extracted under `root`; FileProblem (one line) if there are none."""
    try:
        return Kernels.read(root)
    except (OSError, ValueError, TypeError):
        raise FileProblem(f"{str(root)!r} holds no kernels extracted by kvbench vllm-kernels "
                          f"(no readable vllm/{MANIFEST})") from None


def activate(root: str | pathlib.Path) -> Kernels:
    """Make `root`'s vllm the one this process imports and load its library into torch (after the checks of
    kvbench.vllm_kernels.check). DeviceUnavailable (exit 4) with a one-line reason when it cannot load here."""
    root = pathlib.Path(root).resolve()
    kernels = read(root)
    loaded = sys.modules.get("vllm")
    if loaded is not None and pathlib.Path(loaded.__file__ or "").resolve().parent != root / "vllm":
        raise DeviceUnavailable(f"another vllm ({loaded.__file__}) is already imported in this process; activate "
                                f"{root} in a fresh one")
    if sys.path[:1] != [str(root)]:
        sys.path.insert(0, str(root))
    importlib.invalidate_caches()
    try:
        importlib.import_module("vllm._custom_ops")
    except ImportError as exc:
        raise DeviceUnavailable(str(exc).splitlines()[0]) from None
    return kernels


def try_here(root: str | pathlib.Path) -> dict:
    """Activate `root` here and say what came of it: loads, reason, ops (the write ops registered), triton_error
    (why vLLM's Triton op does not import, or None), version (importlib.metadata's)."""
    try:
        activate(root)
    except KvbenchError as exc:
        return {"loads": False, "reason": str(exc)}
    import importlib.metadata

    import torch

    ops = [name for name in WRITE_OPS if hasattr(torch.ops._C_cache_ops, name)]
    try:
        importlib.import_module(TRITON_MODULE)
        triton_error = None
    except Exception as exc:  # noqa: BLE001 - any failure of vLLM's module is reported, not raised
        triton_error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return {"loads": True, "ops": ops, "triton_error": triton_error, "version": importlib.metadata.version("vllm")}


PROBE = "import json, sys\nfrom kvbench.vllm_kernels import load\nprint(json.dumps(load.try_here(sys.argv[1])))\n"


def probe(root: str | pathlib.Path, python: str = sys.executable, timeout: float = 600) -> dict:
    """`try_here(root)` in a fresh process of `python` (kvbench importable from this checkout)."""
    src = str(pathlib.Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([python, "-c", PROBE, str(root)], capture_output=True, text=True, env=env, timeout=timeout)
    lines = out.stdout.strip().splitlines()
    if out.returncode == 0 and lines:
        return json.loads(lines[-1])
    how = f"signal {-out.returncode}" if out.returncode < 0 else f"exit {out.returncode}"
    last = (out.stderr.strip().splitlines() or ["no output"])[-1]
    return {"loads": False, "reason": f"{read(root).label}: loading it ended the process ({how}): {last}"}
