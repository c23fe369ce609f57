"""Device presence and memory, without touching CUDA until a case really needs it.

asv discovers benchmarks in one process and (with forkserver) forks from it: CUDA must not be initialised before
the fork. `cuda_present()` asks NVML instead of creating a CUDA context.
"""

from __future__ import annotations

import os

import torch

from kvbench import config
from kvbench.errors import CaseError, DeviceUnavailable


def cuda_present() -> bool:
    """Whether a CUDA device is visible, checked through NVML so no CUDA context is created."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    return torch.version.cuda is not None and torch.cuda.is_available()


def cuda_reason() -> str | None:
    """Why CUDA cannot be used here, or None."""
    if torch.version.cuda is None:
        return f"no CUDA device (torch {torch.__version__} is a CPU build)"
    if not cuda_present():
        return "no CUDA device visible"
    return None


def resolve(asked: str | None = None, needed_by: str | None = None) -> str:
    """The device to run on: `asked` (a --device flag), else KVBENCH_DEVICE, else 'cuda' where a CUDA device is
    visible and 'cpu' otherwise. A device asked for explicitly that is not usable is an error, never a silent
    fallback (a GPU runner that lost its GPU must not publish CPU numbers). `needed_by`: a command that runs on
    CUDA only, named in that error instead of a flag the user did not give."""
    device = asked or config.device()
    if device is None:
        return "cuda" if cuda_present() else "cpu"
    if device == "cuda":
        reason = cuda_reason()
        if reason and needed_by:
            raise DeviceUnavailable(f"{needed_by} needs a CUDA device, but {reason}; run it on a GPU machine")
        if reason:
            where = "--device cuda" if asked else "KVBENCH_DEVICE=cuda"
            raise DeviceUnavailable(f"{where} was asked for, but {reason}; use cpu or run on a GPU machine")
    return device


def default_device() -> str:
    return resolve(None)


def ensure_context(device: str) -> None:
    """Create the CUDA context now (a new process's largest fixed cost), so that it is timed on its own."""
    if device == "cuda":
        torch.zeros(1, device=device)
        torch.cuda.synchronize()


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def free_bytes(device: str) -> int:
    """Memory free for new tensors on `device`: on CUDA the driver's free memory plus what torch's allocator holds
    unused (a batch of cases leaves the previous case's memory there); on CPU MemAvailable."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[0] + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_fits(case, needed: int, headroom: float = 0.9) -> None:
    """Raise CaseError if `needed` bytes for `case` exceed the free memory (with headroom), suggesting --num-blocks."""
    free = int(free_bytes(case.device) * headroom)
    if needed <= free:
        return
    per_block = case.cache_bytes // case.num_blocks
    other = needed - case.cache_bytes
    fit = max((free - other) // per_block, 0)
    hint = f"use --num-blocks {fit} or fewer" if fit * case.block_size >= case.num_tokens else "use fewer tokens"
    raise CaseError(
        f"num_blocks {case.num_blocks} needs {needed / 2**30:.2f} GiB on {case.device} but only "
        f"{free / 2**30:.2f} GiB is free; {hint}"
    )
