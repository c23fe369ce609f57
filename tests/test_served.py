"""As vLLM serves it: the served-layout table, model presets, serving batches, the CLI's --model / --layout served,
and (where a full vLLM is importable) the table checked against vLLM's own backend code."""

import importlib
import json
import types

import pytest
import torch

from kvbench import cli
from kvbench.errors import CaseError
from kvbench.ops import layouts, models, served, slots
from kvbench.ops.kv import Case
from kvbench.runner import make_case


@pytest.mark.parametrize("backend, version, layout, block", [
    ("flash-attn", "0.20.0", "nhd-split", 16), ("flash-attn", "0.22.1", "nhd-split", 16),
    ("flash-attn", "0.23.0", "nhd", 16), ("flash-attn", "0.25.1", "nhd", 16),
    ("flash-attn", "0.26.0", "nhd-packed", 16), ("flash-attn", "0.33.0", "nhd-packed", 16),
    ("flash-attn", "0.34.0", "nhd-packed", 64), ("flash-attn", "0.35.0rc1", "nhd-packed", 64),
    ("triton-attn", "0.22.0", "nhd", 16), ("triton-attn", "0.26.0", "nhd-packed", 16),
    ("flashinfer", "0.25.0", "nhd", 16), ("flashinfer", "0.34.0+cu130", "nhd-packed", 64),
])
def test_the_served_table(backend, version, layout, block):
    row = served.served(backend, version)
    assert (row.layout, row.block_size) == (layout, block)


def test_served_resolution_per_implementation_and_device():
    assert served.resolve("kv", "vllm-triton", "cuda", version="0.22.0")[0] == {"layout": "nhd", "block_size": 16}
    assert served.resolve("kv", "vllm-flash", "cuda", version="0.22.0")[0]["layout"] == "nhd-split"
    assert served.resolve("kv", "torch", "cpu", version="0.32.0")[0] == {"layout": "cpu-vec"}
    assert served.resolve("mla", "vllm", "cuda", version="0.33.0")[0] == {"block_size": 16}
    assert served.resolve("mla", "vllm", "cuda", version="0.33.0", kv_cache_dtype="fp8_ds_mla")[0] == {
        "block_size": 64}
    assert served.resolve("indexer", "vllm", "cuda", version="0.20.0")[0] == {"block_size": 64}
    # DeepSeek V3.2's sparse attention needs block 64 whatever the cache dtype (read in 0.26-0.34's backends)
    assert served.resolve("mla", "vllm", "cuda", version="0.26.0", kv_cache_dtype="auto", sparse=True)[0] == {
        "block_size": 64}
    with pytest.raises(CaseError, match="fp8_ds_mla rows, not 'fp8'"):
        served.resolve("mla", "vllm", "cuda", version="0.34.0", kv_cache_dtype="fp8", sparse=True)
    # an fp8 MLA cache with scale 1.0 is written with skip_scale from 0.33 (vLLM's MLA layer), not before
    fields, line = served.resolve("mla", "vllm", "cuda", version="0.33.0", kv_cache_dtype="fp8")
    assert fields == {"block_size": 16, "skip_scale": True} and "skip_scale" in line
    assert served.resolve("mla", "vllm", "cuda", version="0.32.0", kv_cache_dtype="fp8")[0] == {"block_size": 16}
    assert "skip_scale" not in served.resolve("mla", "vllm", "cuda", version="0.34.0", kv_cache_dtype="auto")[0]
    with pytest.raises(CaseError, match="older than the releases kvbench knows"):
        served.served("flash-attn", "0.11.1.dev42+g1a2b3c4")


def test_model_presets_on_one_gpu():
    assert models.get("llama-3.1-8b").fields() == ("kv", {"num_heads": 8, "head_size": 128})
    assert models.get("llama-3.1-70b").fields(8) == ("kv", {"num_heads": 1, "head_size": 128})
    assert models.get("llama-3.1-70b").fields(16)[1]["num_heads"] == 1  # KV heads replicated
    assert models.get("qwen3-235b-a22b").fields(2)[1]["num_heads"] == 2
    assert models.get("gpt-oss-120b").fields()[1] == {"num_heads": 8, "head_size": 64}
    assert models.get("gemma-2-9b").fields()[1] == {"num_heads": 8, "head_size": 256}
    assert models.get("deepseek-v3").fields(8) == ("mla", {"kv_lora_rank": 512, "pe_dim": 64})
    assert models.get("deepseek-v3.2").fields(op="indexer") == ("indexer", {"head_dim": 128})
    assert models.get("vllm-benchmark").fields()[1] == {"num_heads": 128, "head_size": 128}
    for name, model in models.MODELS.items():
        assert model.source and 1 in model.tp_sizes(), name


@pytest.mark.parametrize("name, tp, words", [
    ("llama-3.1-70b", 3, "--tp 3 does not split model 'llama-3.1-70b' (64 attention heads, 8 KV heads); choose one "
                         "of: 1, 2, 4, 8, 16, 32, 64"),
    ("gemma-2-9b", 32, "choose one of: 1, 2, 4, 8, 16"),
])
def test_a_tp_that_does_not_split_the_model(name, tp, words):
    with pytest.raises(CaseError) as exc:
        models.get(name).fields(tp)
    assert words in str(exc.value)


def test_capture_sizes_are_vllms_defaults():
    assert len(slots.CAPTURE_SIZES) == 51 and slots.CAPTURE_SIZES[:5] == (1, 2, 4, 8, 16)
    assert slots.CAPTURE_SIZES[-3:] == (480, 496, 512) and 256 in slots.CAPTURE_SIZES and 264 not in slots.CAPTURE_SIZES
    assert [slots.valid_count("decode-padded", n) for n in (1, 2, 4, 16, 256, 512, 1024)] == [
        1, 2, 3, 12, 252, 504, 1024]


def _slots(pattern, n, block_size=16, num_blocks=4096):
    return slots.slot_sets(pattern, n, num_blocks, block_size, seed=3)[0]


def test_a_padded_decode_batch_pads_at_the_end_to_its_graph():
    s = _slots("decode-padded", 16)
    assert s[:12].min() >= 0 and (s[12:] == -1).all()
    assert len(set((s[:12] // 16).tolist())) == 12  # one block per sequence


def test_a_mixed_batch_is_decodes_then_prefill_chunks():
    s = _slots("mixed", 1024).tolist()
    decodes, chunks = s[:256], s[256:]
    assert len(set(x // 16 for x in decodes)) == 256
    for start in range(0, len(chunks), slots.PREFILL_CHUNK):
        chunk = chunks[start:start + slots.PREFILL_CHUNK]
        assert all(b == a + 1 for a, b in zip(chunk, chunk[1:]) if b % 16)  # consecutive within a block
        assert not set(x // 16 for x in chunk) & set(x // 16 for x in decodes)  # blocks of its own
    assert len(set(s)) == len(s)


def test_prefill_chunks_start_where_their_context_ends():
    starts = [_slots("prefill", 2048, num_blocks=4096)[i].item() % 16 for i in range(0, 2048, 512)]
    assert any(starts) and len(set(starts)) > 1  # not every chunk begins a block


def test_served_case_needs_blocks_for_its_batch():
    with pytest.raises(CaseError, match="slots 'mixed' gives each sequence blocks of its own; use --num-blocks"):
        Case(num_tokens=512, num_blocks=100, slots="mixed", device="cpu")


def test_sweep_a_model_as_served_on_cpu(capsys, tmp_path):
    out = tmp_path / "r.json"
    rc = cli.main(["sweep", "--device", "cpu", "--model", "llama-3.1-8b", "--layout", "served", "--slots", "decode",
                   "--num-tokens", "16", "64", "--iters", "5", "--json", str(out), "--implementation", "torch",
                   "vllm-cpu", "triton"])  # (named: other tests register deliberately wrong writers)
    text = capsys.readouterr().out
    rows = json.loads(out.read_text())["results"]
    assert rc == 0 and {r["implementation"] for r in rows} >= {"torch", "vllm-cpu"}
    for r in rows:
        assert r["case"]["num_heads"] == 8 and r["case"]["head_size"] == 128 and r["case"]["layout"] == "cpu-vec"
        if r["implementation"] == "triton":  # (Triton's interpreter on a CPU) vLLM's CPU layout is not its
            assert r["status"] == "skipped" and "does not support layout 'cpu-vec'" in r["message"]
        else:
            assert r["status"] == "ok" and r["verified"] == "bit-exact"
    assert "served: vLLM" in text and "CPU backend" in text


def test_sweep_deepseek_models_as_served_take_their_block_and_skip_scale(tmp_path, capsys):
    """The sweep's served MLA case is the installed vLLM's (vllm-cpu here, or 0.34.0's without one)."""
    out = tmp_path / "r.json"
    rc = cli.main(["sweep", "--device", "cpu", "--model", "deepseek-v3", "--layout", "served", "--kv-cache-dtype",
                   "fp8", "--num-tokens", "16", "--iters", "3", "--num-blocks", "8", "--json", str(out),
                   "--implementation", "torch"])
    (row,) = json.loads(out.read_text())["results"]
    assert rc == 0 and row["status"] == "ok", row
    expected = served.resolve("mla", "torch", "cpu", kv_cache_dtype="fp8")[0]
    assert row["case"]["block_size"] == expected["block_size"]
    assert row["case"]["skip_scale"] is expected.get("skip_scale", False)
    assert cli.main(["sweep", "--device", "cpu", "--model", "deepseek-v3.2", "--layout", "served",
                     "--kv-cache-dtype", "fp8", "--num-tokens", "16", "--implementation", "torch"]) == 2
    assert "fp8_ds_mla rows" in capsys.readouterr().err


def test_model_presets_reach_the_other_cache_ops_of_their_caches():
    """--model also shapes the ops that read, copy or convert a model's caches (its KV heads per GPU; MLA's latent
    row; the query heads that tensor parallelism splits; V3.2's indexer keys)."""
    llama, v3, v32 = models.get("llama-3.1-70b"), models.get("deepseek-v3"), models.get("deepseek-v3.2")
    assert llama.ops == ("kv", "convert-fp8", "swap-blocks")
    assert llama.fields(8, "swap-blocks") == ("swap-blocks", {"num_heads": 1, "head_size": 128})
    assert v3.fields(8, "mla-rope") == ("mla-rope", {"num_heads": 16, "kv_lora_rank": 512, "pe_dim": 64})
    assert v3.fields(1, "gather") == ("gather", {"kv_lora_rank": 512, "pe_dim": 64})
    assert "indexer-gather" not in v3.ops and v32.fields(1, "indexer-gather") == ("indexer-gather", {"head_dim": 128})
    for model in (llama, v3, v32):  # every op a preset names builds a case of its own
        for op in model.ops:
            name, fields = model.fields(1, op)
            assert make_case("torch", op=name, num_tokens=64, device="cpu", **fields).OP == name


def test_sweep_model_flags_that_conflict(capsys):
    for argv, words in [
        (["--model", "qwen3-8b", "--num-heads", "4"], "--num-heads conflicts with --model qwen3-8b"),
        (["--tp", "2"], "--tp needs --model"),
        (["--model", "deepseek-v3", "--layout", "nhd"], "--layout nhd applies to op kv only"),
        (["--backend", "flashinfer"], "--backend needs --layout served"),
        (["--model", "llama-3.1-8b", "--op", "mla"], "has no op 'mla': its caches go through ops kv, convert-fp8"),
    ]:
        assert cli.main(["sweep", "--device", "cpu", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and words in err, err


# --- vLLM's own backend code, where a full vLLM install makes it importable ------------------------------------

BACKEND_MODULES = {"flash-attn": ("vllm.v1.attention.backends.flash_attn", "FlashAttentionBackend",
                                  "FlashAttentionImpl", "reshape_and_cache_flash"),
                   "triton-attn": ("vllm.v1.attention.backends.triton_attn", "TritonAttentionBackend",
                                   "TritonAttentionImpl", "triton_reshape_and_cache_flash")}


def _backend(name):
    module_name, backend, impl, writer = BACKEND_MODULES[name]
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # vLLM missing, or a build without its dependencies
        pytest.skip(f"needs a full vLLM install ({module_name}: {type(exc).__name__}: {exc})".splitlines()[0])
    return module, getattr(module, backend), getattr(module, impl), writer


def _vllm_cache(backend_cls, num_blocks, block_size, heads, head_size):
    """The layer's cache as this vLLM allocates it: the backend's shape in its stride order (up to 0.28), or the
    model-wide default layout's per-layer view of [blocks, heads, block_size, 2 * head_size] (0.29 and later)."""
    if hasattr(backend_cls, "get_kv_cache_shape"):
        shape = backend_cls.get_kv_cache_shape(num_blocks, block_size, heads, head_size)
        order = backend_cls.get_kv_cache_stride_order()
        stored = torch.empty([shape[i] for i in order])
        return stored.permute([order.index(i) for i in range(len(order))])
    from vllm.v1.attention.backends.utils import get_supported_kv_cache_layouts

    layout = get_supported_kv_cache_layouts([backend_cls])[0]
    logical = (num_blocks, heads, block_size, 2 * head_size)
    order = layout.layer_view_order
    stored = torch.empty([logical[i] for i in order])
    return stored.permute([order.index(i) for i in range(4)])


@pytest.mark.parametrize("backend", list(BACKEND_MODULES))
def test_the_served_layout_is_what_vllms_backend_passes(backend, monkeypatch):
    monkeypatch.setenv("VLLM_KV_CACHE_LAYOUT", "NHD")  # vLLM's default without a KV connector (0.22-0.28 ask a
    # vLLM config for it otherwise)
    module, backend_cls, impl_cls, writer = _backend(backend)
    import vllm

    num_blocks, block_size, heads, head_size = 6, 16, 3, 64
    kv_cache = _vllm_cache(backend_cls, num_blocks, block_size, heads, head_size)
    passed = {}
    record = lambda key, value, key_cache, value_cache, *rest: passed.update(key=key_cache, value=value_cache)
    monkeypatch.setattr(module, writer, record, raising=False)  # (a CPU build of vLLM does not import it)
    fake = types.SimpleNamespace(attn_type=module.AttentionType.DECODER, head_size=head_size, kv_cache_dtype="auto",
                                 _is_per_token_head_quant=False, _set_kv_ptr_range=False)  # 0.33+: ROCm only
    layer = types.SimpleNamespace(_k_scale=torch.ones(()), _v_scale=torch.ones(()))
    x = torch.zeros(2, heads, head_size)
    impl_cls.do_kv_cache_update(fake, layer, x, x, kv_cache, torch.zeros(2, dtype=torch.int64))
    row = served.served(backend, vllm.__version__)
    key, value = layouts.allocate(Case(num_tokens=1, num_blocks=num_blocks, block_size=block_size, num_heads=heads,
                                       head_size=head_size, layout=row.layout, device="cpu", dtype="float"))
    for ours, theirs in ((key, passed["key"]), (value, passed["value"])):
        assert ours.shape == theirs.shape and ours.stride() == theirs.stride()
        base = kv_cache.untyped_storage().data_ptr()
        assert ours.storage_offset() == (theirs.data_ptr() - base) // theirs.element_size()
    from vllm.config.cache import CacheConfig

    assert CacheConfig.DEFAULT_BLOCK_SIZE == row.block_size
