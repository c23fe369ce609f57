import pytest
import torch

from kvbench.measure import device
from kvbench.ops import verify
from kvbench.ops.kv import Case
from kvbench import impls
from kvbench.errors import CaseError, Unavailable, VerificationError
from kvbench.runner import bytes_needed, make_case, prepare


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_defaults_match_vllms_script():
    c = Case(num_tokens=2)
    assert (c.num_heads, c.head_size, c.block_size, c.num_blocks, c.dtype, c.kv_cache_dtype) == (
        128, 128, 16, 16384, "bfloat16", "auto")


@pytest.mark.parametrize(
    "fields, words",
    [
        (dict(head_size=100), ["head_size 100", "64, 80, 96, 112, 120, 128, 192, 256"]),
        (dict(block_size=8), ["block_size 8", "16, 32"]),
        (dict(dtype="int8"), ["dtype 'int8'", "half, bfloat16, float"]),
        (dict(kv_cache_dtype="fp4"), ["kv_cache_dtype 'fp4'", "auto, fp8, fp8_e4m3, fp8_e5m2"]),
        (dict(kv_cache_dtype="fp8", head_size=120), ["head_size 120", "% 16", "64, 80, 96, 112, 128, 192, 256"]),
        (dict(num_tokens=70000, num_blocks=4096), ["num_tokens 70000", "65536 slots", "--num-blocks 4375"]),
        (dict(layout="nhd_x"), ["layout 'nhd_x'", "paged, nhd, hnd, cpu-vec"]),
        (dict(fp8_scales="head", layout="paged", kv_cache_dtype="fp8"), ["fp8_scales 'head'", "nhd, hnd"]),
        (dict(num_heads=0), ["num_heads 0", "positive integer"]),
    ],
)
def test_invalid_cases_say_value_and_allowed(fields, words):
    fields = {"num_tokens": 2, **fields}
    with pytest.raises(CaseError) as exc:
        Case(**fields)
    message = one_line(exc)
    for word in words:
        assert word in message


def test_layout_an_implementation_does_not_support():
    case = make_case("vllm-cpu", layout="nhd", num_tokens=2, num_blocks=8, device="cpu")
    with pytest.raises(Unavailable) as exc:
        prepare(case, "vllm-cpu")
    assert one_line(exc) == "vllm-cpu: does not support layout 'nhd'; it supports: cpu-vec"


def test_unknown_implementation():
    with pytest.raises(CaseError) as exc:
        make_case("cutlass", num_tokens=2)
    assert "implementation 'cutlass'" in one_line(exc) and "torch" in str(exc.value)


def test_caches_that_do_not_fit_suggest_num_blocks(monkeypatch):
    case = Case(num_tokens=64, device="cpu")  # 16384 blocks of 16 x 128 x 128 bf16: 2 x 8 GiB of caches
    monkeypatch.setattr(device, "free_bytes", lambda dev: 300 * 2**20)
    with pytest.raises(CaseError) as exc:
        device.check_fits(case, bytes_needed(case))
    message = one_line(exc)
    assert "num_blocks 16384 needs 16.02 GiB on cpu" in message
    suggested = int(message.split("--num-blocks ")[1].split()[0])
    assert 4 <= suggested < 16384
    assert bytes_needed(case.replace(num_blocks=suggested)) <= 300 * 2**20 * 0.9


def test_slot_patterns_need_enough_blocks():
    with pytest.raises(CaseError) as exc:
        Case(num_tokens=100, num_blocks=50, slots="decode")
    assert "use --num-blocks 100 or more" in one_line(exc)
    with pytest.raises(CaseError) as exc:
        Case(num_tokens=2, l2="lukewarm")
    assert "l2 'lukewarm'" in one_line(exc) and "warm, cold" in str(exc.value)


def test_cold_l2_rotates_disjoint_input_sets_into_the_same_caches():
    from kvbench.runner import COLD_L2_FACTOR

    case = make_case("torch", num_tokens=64, num_heads=4, head_size=64, num_blocks=4096, device="cpu", l2="cold")
    p = prepare(case, "torch")
    per_call = 64 * 4 * 64 * 8  # bytes moved by one call
    assert p.rotation == -(-COLD_L2_FACTOR * (32 << 20) // per_call) == 1024
    slots = torch.cat([w.slot_mapping for w in p.workloads])
    assert slots.unique().numel() == 64 * 1024  # disjoint: a replay of every set leaves each set's tokens in place
    assert all(w.key_cache.data_ptr() == p.workload.key_cache.data_ptr() for w in p.workloads)
    sampler = p.sampler("no_graph")
    assert sampler.calls_per_sample >= p.rotation
    # after the timed sample: 64 sets compared with the reference, every set's rows written, no stray writes
    assert p.check_timed("no_graph").tokens_checked == 64 * verify.FULL_CHECKS  # 64 tokens in each compared set
    run_once = p.sampler("no_graph").run_once  # the re-check after the samples compares fewer sets
    assert verify.verify("torch", p.workloads, run_once, whole=False).tokens_checked == 64 * verify.FULL_RECHECKS
    writers = [impls.get("torch", "kv").bind(w) for w in p.workloads]
    skip_one = lambda: [write() for i, write in enumerate(writers) if i != 5]  # noqa: E731 (set 5: not compared)
    assert 5 not in verify.spread(len(writers), verify.FULL_CHECKS)
    with pytest.raises(VerificationError, match=r"key cache: 64 of 6\d+ rows of the rotation's other input sets never"):
        verify.verify("skips-a-set", p.workloads, skip_one)
    warm = prepare(case.replace(l2="warm"), "torch")
    assert warm.rotation == 1


def test_cold_l2_rotation_takes_the_sets_that_touch_4x_the_l2_and_no_more(monkeypatch):
    from kvbench import runner

    case = make_case("torch", num_tokens=64, num_heads=4, head_size=64, num_blocks=64, device="cpu", l2="cold")
    monkeypatch.setattr(runner, "l2_bytes", lambda device: 256 << 10)  # 8 sets of 128 KiB: 4x a 256 KiB L2
    assert prepare(case, "torch").rotation == 8  # of the 16 that fit


@pytest.mark.parametrize("fields, limit", [
    ({"num_blocks": 64}, "16 disjoint sets fit in the cache; use --num-blocks 4096 or more, or l2 warm"),
    ({"num_tokens": 2, "num_blocks": 4096}, "at most 2048 sets; use more tokens or l2 warm"),
    # fewer sets fit than MAX_ROTATION, and even MAX_ROTATION would not do: more blocks would not help
    ({"num_tokens": 2, "num_blocks": 64}, "512 disjoint sets fit in the cache; use more tokens or l2 warm")])
def test_a_cold_case_whose_rotation_cannot_fill_4x_the_l2_is_skipped_with_why(fields, limit):
    """A rotation capped by the cache or by MAX_ROTATION below 4x the L2 would be timed partly warm: skipped before
    anything is allocated (the CPU's nominal L2: 32 MiB)."""
    case = make_case("torch", **{"num_tokens": 64, "num_heads": 4, "head_size": 64, "device": "cpu", "l2": "cold",
                                 **fields})
    with pytest.raises(Unavailable) as exc:
        prepare(case, "torch")
    sets = int(limit.split()[0]) if limit[0].isdigit() else 2048
    got = one_line(exc)
    assert got.startswith(f"l2 cold: one rotation must touch 4x the L2 (128 MiB here), and {case.num_tokens} tokens "
                          f"a set ({limit.split(';')[0]}) touch {case.bytes_moved * sets / 2**20:.1f} MiB; "), got
    assert got.endswith(limit.split("; ")[1]), got
    # the advice holds: with that many blocks the rotation reaches 4x the L2
    if "--num-blocks" in limit:
        assert prepare(case.replace(num_blocks=4096), "torch").rotation * case.bytes_moved >= 128 << 20
