"""The verifier against deliberately wrong writers (test doubles that live here, not in the package)."""

import pytest
import torch

from kvbench.ops import layouts
from kvbench.errors import VerificationError
from kvbench.impls.base import Implementation
from kvbench.impls.torch_ref import TorchReference
from kvbench.ops.kv import reference_write as write
from kvbench.runner import make_case
from kvbench.ops.verify import verify
from kvbench.ops import workload as make


class Double(Implementation):
    devices = ("cpu",)
    layouts = ("nhd", "paged")

    def __init__(self, name, body):
        self.name, self.body = name, body

    def bind(self, w):
        return lambda: self.body(w)


def quarter_of_heads(w):
    """Like vLLM's paged kernel at 128 heads: only the first quarter of each token is written."""
    h = w.case.num_heads // 4
    write(w.case.replace(num_heads=h), w.key[:, :h], w.value[:, :h], w.key_cache[..., :h, :],
          w.value_cache[..., :h, :], w.slot_mapping, w.k_scale, w.v_scale)


def off_by_one_value(w):
    write(w.case, w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, w.k_scale, w.v_scale)
    layouts.scatter(w.case.layout, "value", w.value_cache, w.slot_mapping[:1], w.value[:1] + 1)


def one_extra_slot(w):
    write(w.case, w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, w.k_scale, w.v_scale)
    free = sorted(set(range(w.case.num_slots)) - set(w.slot_mapping.tolist()))[0]
    layouts.scatter(w.case.layout, "key", w.key_cache, torch.tensor([free]), w.key[:1])


def case(**kw):
    return make_case("torch", layout="nhd", num_tokens=16, num_heads=8, head_size=64, num_blocks=4, device="cpu",
                     **kw)


@pytest.mark.parametrize(
    "body, message",
    [
        (quarter_of_heads, "partial: key cache 25.0% written (expected 100%)"),
        (off_by_one_value, "wrong: value cache: 512 of 8192 elements differ from the reference (first at token 0, head 0"),
        (one_extra_slot, "stray: key cache: 512 elements written outside the mapped slots"),
    ],
)
def test_verifier_catches_wrong_writers(body, message):
    name = message.split(":")[0]
    w = make(case(), seed=5)
    with pytest.raises(VerificationError) as exc:
        verify(name, [w], Double(name, body).bind(w))
    assert str(exc.value).startswith(message)


def test_verifier_catches_a_writer_that_does_not_skip_padding():
    def clamps_padding(w):
        write(w.case, w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping.clamp_min(0), w.k_scale, w.v_scale)

    w = make(case(), seed=5)
    w.slot_mapping[3] = -1
    if 0 in w.slot_mapping.tolist():
        w.slot_mapping[w.slot_mapping.tolist().index(0)] = -1
    impl = Double("clamps", clamps_padding)
    with pytest.raises(VerificationError, match="written outside the mapped slots"):
        verify(impl.name, [w], impl.bind(w), impl.compare)


@pytest.mark.parametrize("kv", ["auto", "fp8", "fp8_e5m2"])
@pytest.mark.parametrize("layout", ["nhd", "paged"])
def test_verifier_passes_the_reference_and_counts_tokens(kv, layout):
    w = make(case(kv_cache_dtype=kv).replace(layout=layout), seed=9)
    w.slot_mapping[2] = -1
    impl = TorchReference()
    result = verify(impl.name, [w], impl.bind(w), impl.compare)
    assert result.tokens_checked == 15 and result.method == "bit-exact"


def _fp8_writer(transform):
    """Writes transform(x / scale) as e4m3 codes: a stand-in for kernels that round or scale differently."""

    def body(w):
        for which, x, s, cache in (("key", w.key, w.k_scale, w.key_cache), ("value", w.value, w.v_scale, w.value_cache)):
            codes = transform(x.float() / s).to(torch.float8_e4m3fn).view(torch.uint8)
            layouts.scatter(w.case.layout, which, cache, w.slot_mapping, codes)

    return body


def _truncate_e4m3(y):
    nearest = y.to(torch.float8_e4m3fn)
    away = nearest.float().abs() > y.abs()
    return torch.where(away, (nearest.view(torch.uint8) - 1).view(torch.float8_e4m3fn).float(), nearest.float())


def test_checks_exact_and_one_step():
    w = make(case(kv_cache_dtype="fp8"), seed=2)
    truncating = Double("tz", _fp8_writer(_truncate_e4m3))
    with pytest.raises(VerificationError, match=r"tz: key cache: \d+ of 8192 elements differ.*got .*, expected "):
        verify(truncating.name, [w], truncating.bind(w), truncating.compare)
    truncating.compare = "step"
    assert verify(truncating.name, [w], truncating.bind(w), truncating.compare).method == "fp8 within 1 step of round-to-nearest"
    wrong_scale = Double("scale", _fp8_writer(lambda y: y * 2))
    wrong_scale.compare = "step"
    with pytest.raises(VerificationError, match="scale: key cache"):
        verify(wrong_scale.name, [w], wrong_scale.bind(w), wrong_scale.compare)


@pytest.mark.parametrize("layout", ["nhd", "paged"])
def test_a_rows_only_check_poisons_and_compares_the_written_rows_and_nothing_else(layout):
    """verify(whole=False), the re-check after the samples: the reference passes; a writer that writes nothing or
    a wrong value fails; a stray write outside the rows is not its business (the whole check before caught that),
    and it leaves the rest of the cache as it found it."""
    w = make(case().replace(layout=layout), seed=9)
    w.slot_mapping[2] = -1
    impl = TorchReference()
    assert verify(impl.name, [w], impl.bind(w), impl.compare, whole=False).tokens_checked == 15
    for name, body, message in [("idle", lambda w: None, "idle: key cache 0.0% written"),
                                ("wrong", off_by_one_value, "wrong: value cache: 512 of 7680 elements differ")]:
        with pytest.raises(VerificationError) as exc:
            verify(name, [w], Double(name, body).bind(w), whole=False)
        assert str(exc.value).startswith(message), str(exc.value)
    w.key_cache.fill_(0)
    before = w.key_cache.clone()
    verify("stray", [w], Double("stray", one_extra_slot).bind(w), whole=False)
    rows = w.slot_mapping[w.slot_mapping >= 0]
    outside = torch.ones(w.case.num_slots, dtype=torch.bool)
    outside[rows] = False
    stray = [s for s in range(w.case.num_slots) if outside[s]
             and not torch.equal(layouts.gather(layout, "key", w.key_cache, torch.tensor([s])),
                                 layouts.gather(layout, "key", before, torch.tensor([s])))]
    assert len(stray) == 1  # the one stray slot it wrote; every other slot outside the rows as it was


def test_a_rows_only_check_refuses_an_op_whose_reference_knows_only_the_first_call():
    from kvbench.runner import make_case as make_op_case

    w = make(make_op_case("torch", op="mla-rope", num_tokens=16, device="cpu"), seed=3)
    with pytest.raises(ValueError, match="checked whole only"):
        verify("torch", [w], lambda: None, whole=False)


@pytest.mark.parametrize("op, fields", [("kv", {"kv_cache_dtype": "fp8", "slots": "padded"}), ("mla", {}),
                                        ("indexer", {})])
def test_a_rotations_fingerprints_taken_together_equal_each_sets_own(op, fields):
    """fingerprints() sums a rotation's sets input by input in one pass; the values are fingerprint()'s, set by set,
    and a change to one set's input shows in that set's fingerprint only."""
    from kvbench import ops
    from kvbench.ops.verify import fingerprint, fingerprints

    case = make_case("torch", op=op, num_tokens=16, l2="cold", device="cpu", num_blocks=256, **fields)
    sets = ops.workloads(case, 5, 12)
    together = fingerprints(sets)
    assert [f.tolist() for f in together] == [fingerprint(w.inputs()).tolist() for w in sets]
    first_input = sets[7].inputs()[0]
    first_input.view(-1)[3] += 1
    changed = [i for i, (a, b) in enumerate(zip(together, fingerprints(sets))) if not torch.equal(a, b)]
    assert changed == [7]
