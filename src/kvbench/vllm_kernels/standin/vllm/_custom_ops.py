"""kvbench's stand-in for vllm._custom_ops (not vLLM's code).

Importing it loads the release's cache-op library (the file _kvbench_kernels.json names, taken from vLLM's wheel)
into the running torch; its ops are then handed out by name from torch.ops._C_cache_ops, as vLLM's wrappers pass
their arguments straight through. Where kvbench is importable the library is checked first
(kvbench.vllm_kernels.check: torch version, CUDA, GPU architecture), so a library that cannot load here is an
ImportError with a one-line reason rather than a loader error or a crash.
"""

import json
import pathlib

import torch

_HERE = pathlib.Path(__file__).resolve().parent
_MANIFEST = json.loads((_HERE / "_kvbench_kernels.json").read_text())
LIBRARY = _HERE / _MANIFEST["library"]
_LABEL = f"vLLM {_MANIFEST['version']}'s {LIBRARY.name}"


def _why_not():
    """kvbench's one-line reason why the library cannot load here, or None (also when kvbench is absent)."""
    try:
        from kvbench.vllm_kernels import Kernels, check
    except ImportError:
        return None
    return check.why_not(Kernels(**_MANIFEST))


_REASON = _why_not()
if _REASON:
    raise ImportError(_REASON)
if not LIBRARY.exists() and LIBRARY.with_name(LIBRARY.name + ".xz").exists():  # packed to be carried: unpack once
    import lzma
    import os

    _part = LIBRARY.with_name(f".{LIBRARY.name}.{os.getpid()}")
    with lzma.open(LIBRARY.with_name(LIBRARY.name + ".xz")) as _src, open(_part, "wb") as _dst:
        while _chunk := _src.read(1 << 24):
            _dst.write(_chunk)
    os.chmod(_part, 0o755)
    os.replace(_part, LIBRARY)
try:
    torch.ops.load_library(str(LIBRARY))
except OSError as exc:
    raise ImportError(f"{_LABEL} did not load: {str(exc).splitlines()[0]}") from None


def __getattr__(name):
    """The library's op `name` (vLLM's wrapper of it takes the same arguments)."""
    if not name.startswith("__") and hasattr(torch.ops._C_cache_ops, name):
        return getattr(torch.ops._C_cache_ops, name)
    raise AttributeError(f"{_LABEL} registers no torch.ops._C_cache_ops.{name}")
