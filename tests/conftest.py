"""Shared test settings: small CPU cases, a private copy-bandwidth cache, and the `gpu` marker's skip."""

import os

import pytest
import torch

os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")


def _cuda() -> bool:
    return torch.version.cuda is not None and torch.cuda.is_available()


if not _cuda():  # run kvbench's Triton kernel through Triton's interpreter on CPU tensors
    os.environ["TRITON_INTERPRET"] = "1"


def pytest_collection_modifyitems(config, items):
    if _cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (run on the GPU machine: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("KVBENCH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "kvbench-cache"))
