"""Can a release's library load into this process's torch, on this machine? Decided before anything loads it:

- the torch version, for a library not built against libtorch's stable ABI (`_C.abi3.so`, vLLM <= 0.22): it
  loads only into the torch its wheel requires (`Requires-Dist: torch==X`);
- the CUDA major version it links (`libcudart.so.N`) against this torch's (a CPU build of torch has none);
- the GPU: through NVML (no CUDA context is created, so this is safe before asv forks), whether the library has
  code for the GPU's architecture (a cubin of the same major and no later minor, or PTX of no later
  architecture), and whether the driver supports its CUDA version. With no GPU, the reason says so.

`why_not` joins every reason into one line; None means nothing stands in the way (the loader has the last word).
"""

from __future__ import annotations

import dataclasses

from kvbench.vllm_kernels import Kernels
from kvbench.vllm_kernels.binary import GpuCode


@dataclasses.dataclass(frozen=True)
class Gpu:
    major: int
    minor: int
    name: str
    driver_cuda: int | None  # the newest CUDA major the driver supports


def gpu() -> Gpu | str | None:
    """The first GPU CUDA would use, read through NVML; a reason ("no GPU (...)") when there is none; None when
    NVML cannot be asked (nvidia-ml-py not installed): the GPU is then not checked."""
    try:
        import pynvml
    except ImportError:
        return None
    from kvbench.measure.gpu_state import nvml_index

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return f"no GPU (NVML: {exc})"
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return "no GPU (NVML sees no device)"
        handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index(0))
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        name = pynvml.nvmlDeviceGetName(handle)
        driver = pynvml.nvmlSystemGetCudaDriverVersion() // 1000
        return Gpu(major, minor, name.decode() if isinstance(name, bytes) else name, driver)
    except pynvml.NVMLError as exc:
        return f"no GPU (NVML: {exc})"
    finally:
        pynvml.nvmlShutdown()


def _torch_reasons(k: Kernels) -> list[str]:
    import torch

    here, cuda = torch.__version__, torch.version.cuda
    out = []
    if not k.stable_abi and k.torch_pin and here.split("+")[0] != k.torch_pin.split("+")[0]:
        out.append(f"it is built for torch {k.torch_pin} (the wheel requires torch=={k.torch_pin}) and this is "
                   f"torch {here}")
    if k.cuda is not None and cuda is None:
        out.append(f"it needs CUDA {k.cuda} and this torch ({here}) is a CPU build")
    elif k.cuda is not None and int(cuda.split(".")[0]) != k.cuda:
        out.append(f"it needs CUDA {k.cuda} and this torch ({here}) is built for CUDA {cuda}")
    return out


def _gpu_reasons(k: Kernels, here: Gpu | str | None) -> list[str]:
    code = GpuCode(tuple(k.cubins), tuple(k.ptx))
    if not code or here is None:
        return []
    if isinstance(here, str):
        return [here]
    out = []
    if not code.runs_on(here.major, here.minor):
        out.append(f"it has GPU code for {code.describe()}, none for this GPU's sm_{here.major}{here.minor} "
                   f"({here.name})")
    if k.cuda and here.driver_cuda and here.driver_cuda < k.cuda:
        out.append(f"it needs CUDA {k.cuda} and the driver supports CUDA {here.driver_cuda} at most")
    return out


def reasons(k: Kernels) -> list[str]:
    """Everything that keeps `k`'s library from loading here (empty: nothing found)."""
    return _torch_reasons(k) + _gpu_reasons(k, gpu())


def why_not(k: Kernels) -> str | None:
    """One line saying why `k`'s library cannot load here, or None."""
    found = reasons(k)
    return f"{k.label} cannot load here: {'; '.join(found)}" if found else None
