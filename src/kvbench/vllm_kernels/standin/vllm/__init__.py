"""kvbench's stand-in for the `vllm` package (written by `kvbench vllm-kernels`; not vLLM's code).

This tree holds one vLLM release's KV-cache kernels, taken from its wheel: the library that registers
torch.ops._C_cache_ops and vLLM's Triton write op (vllm/v1/attention/ops/triton_reshape_and_cache_flash.py). The
rest of `vllm` here is kvbench's: just the names kvbench's adapters and that Triton module import. The release is
named in vllm-<version>.dist-info beside this package and in _kvbench_kernels.json.
"""

import json as _json
import pathlib as _pathlib

__version__ = _json.loads((_pathlib.Path(__file__).with_name("_kvbench_kernels.json")).read_text())["version"]
