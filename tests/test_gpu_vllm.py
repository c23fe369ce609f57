"""vLLM's real kernels on a GPU, through the same verifier as every case (marked `gpu`; skipped without CUDA, and
without a CUDA build of vLLM: on the GPU machine the device-vllm package provides vLLM's compiled ops).

Known vLLM defects (kvbench.defects, the list the suite's verdicts use) are asserted as the failures they are:
a case inside a defect's predicate must fail with that defect's message (defects.match), every other case must
pass. When a vLLM release fixes one, its test fails with "vLLM no longer shows ...", and kvbench.defects and
README.md's "vLLM defects kvbench catches" need updating."""

import dataclasses

import pytest

from kvbench import defects, impls
from kvbench.errors import VerificationError
from kvbench.measure.machine import package_version
from kvbench.ops.layouts import FLASH_LAYOUTS
from kvbench.runner import make_case, prepare

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _needs_vllm():
    reason = impls.get("vllm-flash").unavailable_reason("cuda")
    if reason:
        pytest.skip(f"needs vLLM's CUDA kernels: {reason}")


def passes_or_defect(case, implementation, expect: str | None = None):
    """Verify; where a known defect's predicate covers the case (kvbench.defects), the verification must fail as
    that defect (its message, and `expect` in it where given), else pass."""
    fields = dataclasses.asdict(case)
    defect = defects.applying(case.OP, implementation, fields)
    if defect is None:
        p = prepare(case, implementation)
        assert p.verified.tokens_checked == case.valid_tokens
        return p.verified.method
    try:
        prepare(case, implementation)
    except VerificationError as exc:
        found = defects.match(case.OP, implementation, package_version("vllm"), fields, str(exc))
        assert found is defect, f"not the known defect {defect.id} (/{defect.message}/): {exc}"
        assert expect is None or expect in str(exc), str(exc)
        return "defect"
    pytest.fail(f"vLLM {package_version('vllm')} no longer shows the defect {defect.id} (/{defect.message}/) for "
                f"{case.label()}: update kvbench.defects (its releases, or its scope) and the README's 'vLLM defects "
                f"kvbench catches'")


HEADS = [(32, 128), (128, 128), (64, 256)]  # vLLM's script's head configurations
DTYPES = ["half", "bfloat16", "float"]
KV = ["auto", "fp8", "fp8_e4m3", "fp8_e5m2"]


@pytest.mark.parametrize("heads, head_size", HEADS)
@pytest.mark.parametrize("layout", FLASH_LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kv", KV)
def test_vllm_flash_is_bit_exact(heads, head_size, layout, dtype, kv):
    case = make_case("vllm-flash", layout, num_tokens=1024, num_blocks=2048, num_heads=heads, head_size=head_size,
                     dtype=dtype, kv_cache_dtype=kv, slots="padded")
    assert passes_or_defect(case, "vllm-flash") == "bit-exact"


@pytest.mark.parametrize("layout", FLASH_LAYOUTS)
@pytest.mark.parametrize("kv", ["fp8", "fp8_e5m2"])
def test_vllm_flash_per_head_scales(layout, kv):
    case = make_case("vllm-flash", layout, num_tokens=512, num_blocks=1024, kv_cache_dtype=kv, fp8_scales="head")
    assert passes_or_defect(case, "vllm-flash") == "bit-exact"


def paged_written(heads: int, head_size: int, kv: str, dtype: str) -> str | None:
    """What vLLM's paged kernel (one thread per 16-byte chunk of a token, at most 512 threads, no loop) leaves
    unwritten, as the verifier says it; None where it writes everything."""
    x = 16 if kv != "auto" else 16 // {"half": 2, "bfloat16": 2, "float": 4}[dtype]
    chunks = heads * head_size // x
    if chunks <= 512:
        return None
    written_heads = 512 * x // head_size
    return f"key cache {100 * 512 / chunks:.1f}% written (expected 100%): heads {written_heads}\u2013{heads - 1} of " \
           f"{heads} never written"


@pytest.mark.parametrize("heads, head_size", HEADS)
@pytest.mark.parametrize("layout", ["paged", "paged-iv"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kv", ["auto", "fp8", "fp8_e5m2"])
def test_vllm_paged_writes_all_heads_or_shows_its_known_defect(heads, head_size, layout, dtype, kv):
    case = make_case("vllm", layout, num_tokens=1024, num_blocks=2048, num_heads=heads, head_size=head_size,
                     dtype=dtype, kv_cache_dtype=kv, slots="padded")
    expect = paged_written(heads, head_size, kv, dtype)
    assert (defects.applying("kv", "vllm", dataclasses.asdict(case)) is not None) == (expect is not None)
    passes_or_defect(case, "vllm", expect)


@pytest.mark.parametrize("layout", FLASH_LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kv", KV)
def test_vllm_triton_op(layout, dtype, kv):
    case = make_case("vllm-triton", layout, num_tokens=1024, num_blocks=2048, dtype=dtype, kv_cache_dtype=kv,
                     slots="padded")
    passes_or_defect(case, "vllm-triton")  # fp8_e5m2: the defect triton-flash-e5m2-as-e4m3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kv, skip", [("auto", False), ("fp8", False), ("fp8", True), ("fp8_e5m2", False)])
@pytest.mark.parametrize("block_size, rank", [(64, 512), (16, 256)])
def test_vllm_mla_is_bit_exact(dtype, kv, skip, block_size, rank):
    case = make_case("vllm", op="mla", num_tokens=1000, num_blocks=512, block_size=block_size, kv_lora_rank=rank,
                     dtype=dtype, kv_cache_dtype=kv, skip_scale=skip, slots="padded")
    passes_or_defect(case, "vllm")


@pytest.mark.parametrize("dtype", ["bfloat16", "half"])
def test_vllm_ds_mla_rows(dtype):
    """fp8_ds_mla: bit-exact for bf16; for fp16 vLLM 0.33 takes each tile's amax from the raw 16-bit patterns (read
    from its sm_90 code), so its scales and codes differ."""
    case = make_case("vllm", op="mla", num_tokens=1000, num_blocks=64, kv_cache_dtype="fp8_ds_mla", dtype=dtype,
                     slots="padded")
    assert (passes_or_defect(case, "vllm") == "defect") == (dtype != "bfloat16")


@pytest.mark.parametrize("dtype", ["bfloat16", "half", "float"])
@pytest.mark.parametrize("fmt", ["ue8m0", "fp32", "mxfp8"])
@pytest.mark.parametrize("block_size", [16, 64])
def test_vllm_indexer(dtype, fmt, block_size):
    """bf16 bit-exact; fp16 (amax from raw bits) and float32 (read as pairs) differ in vLLM 0.33."""
    case = make_case("vllm", op="indexer", num_tokens=1000, num_blocks=128, block_size=block_size, dtype=dtype,
                     scale_fmt=fmt, slots="padded")
    assert (passes_or_defect(case, "vllm") == "defect") == (dtype != "bfloat16")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kv", ["int8", "fp8"])
@pytest.mark.parametrize("heads, head_size", [(8, 128), (1, 64), (4, 256)])
def test_vllm_token_head_quant_within_one_step(dtype, kv, heads, head_size):
    case = make_case("vllm-triton", op="token-head-quant", num_tokens=1000, num_blocks=128, num_heads=heads,
                     head_size=head_size, dtype=dtype, kv_cache_dtype=kv, slots="padded")
    assert passes_or_defect(case, "vllm-triton") != "defect"


def test_vllm_paged_defect_message_names_the_heads():
    case = make_case("vllm", num_tokens=64, num_blocks=256)
    with pytest.raises(VerificationError) as exc:
        prepare(case, "vllm")
    assert "key cache 25.0% written (expected 100%): heads 32\u2013127 of 128 never written" in str(exc.value)


@pytest.mark.parametrize("model", ["llama-3.1-8b", "llama-3.1-70b:tp8", "gpt-oss-120b", "gemma-2-9b",
                                   "vllm-benchmark"])
@pytest.mark.parametrize("batch, tokens", [("decode-padded", 64), ("mixed", 2048), ("prefill", 8192)])
@pytest.mark.parametrize("kv", ["auto", "fp8"])
@pytest.mark.parametrize("implementation", ["vllm-flash", "vllm-triton", "triton"])
def test_models_as_served(model, batch, tokens, kv, implementation):
    """Every writer in the layout and block size the installed vLLM serves with, real models' shapes, serving
    batches (decode padded to its graph, mixed, prefill chunks)."""
    from kvbench.asv.suite import served_case

    case = served_case(model, implementation, num_tokens=tokens, slots=batch, kv_cache_dtype=kv)
    assert case.layout in ("nhd-split", "nhd", "nhd-packed")
    assert passes_or_defect(case, implementation) in ("bit-exact", "fp8 within 1 step of round-to-nearest")


@pytest.mark.parametrize("write", ["v3-mla-auto", "v3-mla-fp8", "v3.2-mla-fp8_ds_mla", "v3.2-indexer"])
@pytest.mark.parametrize("batch", ["decode-padded", "mixed", "prefill"])
def test_deepseek_as_served(write, batch):
    from benchmarks.benchmarks import ServedMLA

    case = ServedMLA().case(512, write, batch, "vllm")
    assert passes_or_defect(case, "vllm") == "bit-exact"
