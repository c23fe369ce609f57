"""A vLLM release's KV-cache kernels without its stack (`kvbench vllm-kernels`).

From one of vLLM's wheels (a release from PyPI, a main-branch commit from vLLM's per-commit index, or a given
file), only two things are taken: the compiled library that registers `torch.ops._C_cache_ops` (found by its bytes:
`vllm/_C.abi3.so` up to 0.22, `vllm/_C_stable_libtorch.abi3.so` from 0.23) and vLLM's Triton write op
(`vllm/v1/attention/ops/triton_reshape_and_cache_flash.py`). They are written under a directory of their own with a
small stand-in `vllm` package of kvbench's (standin/vllm: just what kvbench's adapters and that Triton module
import) and a `vllm-<version>.dist-info`, so `importlib.metadata.version("vllm")` names the release:

    DIR/<version or commit>/vllm/__init__.py, _custom_ops.py, platforms/, ...   kvbench's stand-ins
    DIR/<version or commit>/vllm/_C_stable_libtorch.abi3.so                      from the wheel
    DIR/<version or commit>/vllm/v1/attention/ops/triton_reshape_and_cache_flash.py  from the wheel
    DIR/<version or commit>/vllm/_kvbench_kernels.json                           what was taken (MANIFEST)
    DIR/<version or commit>/vllm-<version>.dist-info/METADATA, RECORD, INSTALLER

A process uses it with that directory first on its path (PYTHONPATH, or `load.activate` in-process); importing
`vllm._custom_ops` first checks that the library can load here (`check`: torch version for the non-stable library,
CUDA major, GPU architecture; one line saying why not) and only then loads it into the running torch. No vLLM
dependency is installed and torch is not pinned.

Modules: `fetch` (the wheel), `wheel` (what it holds, and extracting it), `binary` (a library's GPU code and CUDA
version), `check` (can it load here), `load` (activate it, or try it in a fresh process). Nothing here imports
torch at import time; `wheel` and `fetch` use the standard library only (asv's install step runs them).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

MANIFEST = "_kvbench_kernels.json"  # in <root>/vllm/: read by the stand-in and by `check`
TRITON_MODULE = "vllm.v1.attention.ops.triton_reshape_and_cache_flash"


@dataclasses.dataclass
class Kernels:
    """What was taken from one wheel, and what its library needs."""

    version: str  # the wheel's METADATA Version
    wheel: str  # the wheel's file name
    library: str  # the file name of the library in vllm/ (e.g. _C_stable_libtorch.abi3.so)
    stable_abi: bool  # built against libtorch's stable ABI (loads into any recent torch)
    torch_pin: str | None  # the torch version the wheel requires (Requires-Dist: torch==X), if pinned
    cuda: int | None  # the CUDA major version the library links (None: no CUDA)
    cubins: list[int]  # SM architectures with compiled code
    ptx: list[int]  # SM architectures with PTX
    triton: str | None  # path of the Triton write op inside the tree, None if the wheel has none
    commit: str | None = None  # the vLLM commit, where it was fetched by commit
    packed: str | None = None  # "sm_90 xz": only that GPU's code kept, the library xz-compressed (to carry it)

    @property
    def label(self) -> str:
        return f"vLLM {self.version}'s {self.library}"

    def save(self, root: pathlib.Path) -> None:
        (root / "vllm" / MANIFEST).write_text(json.dumps(dataclasses.asdict(self), indent=1) + "\n")

    @classmethod
    def read(cls, root: str | pathlib.Path) -> Kernels:
        return cls(**json.loads((pathlib.Path(root) / "vllm" / MANIFEST).read_text()))
