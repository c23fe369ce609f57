"""kvbench's stand-in for vllm.platforms (not vLLM's code): `current_platform`, an NVIDIA GPU as vLLM's CUDA
wheels see it, with only what vLLM's Triton write op asks of it. Nothing touches CUDA until a method is called."""

import torch


class CudaPlatform:
    device_type = "cuda"

    def is_cuda(self) -> bool:
        return True

    def is_rocm(self) -> bool:
        return False

    def is_xpu(self) -> bool:
        return False

    def is_cpu(self) -> bool:
        return False

    def fp8_dtype(self) -> torch.dtype:
        return torch.float8_e4m3fn  # NVIDIA's fp8 (e4m3, finite, NaN only)

    def get_device_capability(self, device_id: int = 0) -> tuple[int, int] | None:
        return torch.cuda.get_device_capability(device_id) if torch.cuda.is_available() else None

    def has_device_capability(self, capability, device_id: int = 0) -> bool:
        """Whether the GPU's compute capability is at least `capability` ((major, minor) or 10 * major + minor)."""
        have = self.get_device_capability(device_id)
        if have is None:
            return False
        if isinstance(capability, tuple):
            return tuple(have) >= capability
        return 10 * have[0] + have[1] >= capability


current_platform = CudaPlatform()
