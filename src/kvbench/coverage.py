"""Which of vLLM's KV-cache ops kvbench tracks, and why the others are left out: data, checked against vLLM itself.

TABLE names every cache op seen in vLLM 0.20-0.34 (notes/vllm-releases.json: the ops of torch.ops._C_cache_ops and
the cache inserts, gathers and attention-side cache readers of torch.ops._C, read from each release's wheel) with
the kvbench op that tracks it or, in one line, why it is left out. `registered()` lists, for the vLLM whose kernel
library is loaded, every op it registers in _C_cache_ops and every _C op that touches a KV cache (`is_cache_op`);
`kvbench info` prints each with its line, and a GPU test fails when a release registers one this table does not
name (tests/test_coverage.py).
"""

from __future__ import annotations

import dataclasses
import re

NAMESPACES = ("_C_cache_ops", "_C")


@dataclasses.dataclass(frozen=True)
class Entry:
    op: str | None  # the kvbench op that tracks it (None: left out)
    how: str  # what kvbench measures of it, or why it is left out (one line)

    def line(self) -> str:
        return f"tracked: kvbench op {self.op!r} ({self.how})" if self.op else f"left out: {self.how}"


def _tracked(op: str, how: str) -> Entry:
    return Entry(op, how)


def _left(why: str) -> Entry:
    return Entry(None, why)


_FUSED = "a fused {what} of {model} only ({where}); no kvbench preset serves {model}"
_ATTENTION = "an attention kernel that reads the cache ({what}); kvbench measures cache ops, not attention"

TABLE: dict[str, Entry] = {
    # torch.ops._C_cache_ops
    "reshape_and_cache": _tracked("kv", "layouts paged and paged-iv, implementation vllm"),
    "reshape_and_cache_flash": _tracked("kv", "layouts nhd, hnd and the served ones, implementation vllm-flash"),
    "concat_and_cache_mla": _tracked("mla", "auto, fp8, fp8_e5m2, fp8_ds_mla, skip_scale; implementation vllm"),
    "indexer_k_quant_and_cache": _tracked("indexer", "ue8m0, fp32 and mxfp8 scales; implementation vllm"),
    "convert_fp8": _tracked("convert-fp8", "dequantize and quantize, e4m3 and e5m2; implementation vllm"),
    "gather_and_maybe_dequant_cache": _tracked("gather", "MLA rows, auto and fp8; implementation vllm"),
    "cp_gather_cache": _tracked("cp-gather", "MLA rows copied, starts inside blocks; implementation vllm"),
    "swap_blocks": _tracked("swap-blocks", "GPU->CPU, CPU->GPU, GPU->GPU; implementation vllm"),
    "swap_blocks_batch": _tracked("swap-blocks", "all layers' pages in one call; implementation vllm-batch"),
    "cp_gather_indexer_k_quant_cache": _tracked("indexer-gather", "V3.2 indexer codes and scales; implementation "
                                                                  "vllm"),
    "cp_gather_and_upconvert_fp8_kv_cache": _tracked("upconvert-gather", "V3.2 fp8_ds_mla rows into bf16 (vLLM >= "
                                                                         "0.26's schema); implementation vllm"),
    "concat_and_cache_mla_grouped": _tracked("mla-grouped", "several layers' MLA rows in one call, bf16 and fp8; "
                                                            "implementation vllm"),
    "concat_mla_q": _tracked("concat-mla-q", "MLA decode queries for FlashMLA, strided inputs; implementation vllm"),
    "concat_and_cache_mla_rope_fused": _tracked("mla-rope", "RoPE on q_pe and k_pe fused with the MLA cache write "
                                                            "(used only by an opt-in fusion pass); implementation "
                                                            "vllm"),
    "cp_gather_and_upconvert_nvfp4_kv_cache": _left("reads nvfp4_ds_mla rows, a cache format vLLM allows on "
                                                    "Blackwell (SM100) only; kvbench measures on an H200"),
    "hisparse_resolve_residency": _left("HiSparse's host-cache residency planner (vllm/v1/hisparse): bookkeeping "
                                        "of which rows are resident, not a cache write or gather of a served "
                                        "model; its copies are swap_blocks_batch (tracked)"),
    "hisparse_invalidate_written_slots": _left("HiSparse bookkeeping (marks rows stale after a write), not a cache "
                                               "copy"),
    "hisparse_gather_plan": _left("HiSparse's gather of missing rows from the host cache, only with HiSparse "
                                  "offloading enabled (off by default); its payload copies are swap_blocks_batch"),
    "hisparse_gather_compact": _left("HiSparse's compacted host-to-GPU row gather, only with HiSparse offloading "
                                     "enabled (off by default)"),
    # torch.ops._C: model-specific fused cache inserts
    "fused_qknorm_rope_cache": _left(_FUSED.format(what="QK-norm + RoPE + cache insert", model="Step-5",
                                                   where="vllm/models/step5")),
    "fused_deepseek_v4_kv_rope_insert": _left(_FUSED.format(what="KV RoPE + cache insert", model="DeepSeek-V4",
                                                            where="vllm/models/deepseek_v4*")),
    "fused_deepseek_v4_qnorm_rope_kv_rope_quant_insert": _left(_FUSED.format(
        what="Q-norm + RoPE + quantized cache insert", model="DeepSeek-V4", where="vllm/models/deepseek_v4*")),
    "fused_deepseek_v4_qnorm_rope_kv_rope_quant_insert_out": _left(_FUSED.format(
        what="Q-norm + RoPE + quantized cache insert", model="DeepSeek-V4", where="vLLM 0.27-0.28")),
    "fused_deepseek_v4_qnorm_rope_kv_rope_full_cache_bf16_insert": _left(_FUSED.format(
        what="Q-norm + RoPE + bf16 cache insert", model="DeepSeek-V4", where="vllm/models/deepseek_v4*")),
    "fused_deepseek_v4_qnorm_rope_kv_rope_full_cache_fp8_insert": _left(_FUSED.format(
        what="Q-norm + RoPE + fp8 cache insert", model="DeepSeek-V4", where="vllm/models/deepseek_v4*")),
    "fused_kimi_k3_mla_decode_q_concat_ds_mla_insert": _left(_FUSED.format(
        what="MLA decode query concat + fp8_ds_mla insert", model="Kimi-K3", where="vllm/models/kimi_k3")),
    "fused_kimi_k3_mla_decode_q_concat_kv_cache_fp8_insert": _left(_FUSED.format(
        what="MLA decode query concat + fp8 cache insert", model="Kimi-K3", where="vllm/models/kimi_k3")),
    "fused_kimi_k3_mla_decode_q_concat_kv_cache_insert": _left(_FUSED.format(
        what="MLA decode query concat + cache insert", model="Kimi-K3", where="vllm/models/kimi_k3")),
    "fused_kimi_k3_mla_key_concat_ds_mla_insert": _left(_FUSED.format(
        what="MLA key concat + fp8_ds_mla insert", model="Kimi-K3", where="vllm/models/kimi_k3")),
    "fused_kimi_k3_mla_key_concat_kv_cache_insert": _left(_FUSED.format(
        what="MLA key concat + cache insert", model="Kimi-K3", where="vllm/models/kimi_k3")),
    "fused_kimi_k3_mla_qkv_quant_kv_cache_fp8_insert": _left(_FUSED.format(
        what="MLA QKV quantization + fp8 cache insert", model="Kimi-K3", where="vllm/models/kimi_k3")),
    "fused_minimax_m3_qknorm_rope_kv_insert": _left(_FUSED.format(
        what="QK-norm + RoPE + KV and index cache insert", model="MiniMax-M3", where="vllm/models/minimax_m3")),
    "fused_minimax_m3_dspark_context_kv": _left(_FUSED.format(
        what="context-KV norm + RoPE + cache insert", model="MiniMax-M3", where="vllm/models/minimax_m3")),
    "fused_muse_spark_qknorm_rope_kv_insert": _left(_FUSED.format(
        what="QK-norm + RoPE + cache insert", model="Muse-Spark", where="vllm/models/muse_spark")),
    "octave_cache_store": _left("the cache store of vLLM's ROCm Octave attention (RDNA3 GPUs); kvbench measures "
                                "NVIDIA GPUs"),
    "direct_dcp_kv_gather": _left("an all-gather of KV rows across decode-context-parallel GPUs over symmetric "
                                  "memory (vllm/v1/attention/ops/dcp.py): needs several GPUs, kvbench measures one"),
    # torch.ops._C: attention kernels that read the cache, and vLLM's CPU backend
    "paged_attention_v1": _left(_ATTENTION.format(what="vLLM's legacy paged attention, up to 0.24")),
    "paged_attention_v2": _left(_ATTENTION.format(what="vLLM's legacy paged attention, up to 0.24")),
    "sm100_cutlass_mla_decode": _left(_ATTENTION.format(what="CUTLASS MLA decode, Blackwell only")),
    "flash_mla_fwd_kvcache": _left(_ATTENTION.format(what="FlashMLA decode")),
    "mla_decode_kvcache": _left(_ATTENTION.format(what="the CPU backend's MLA decode")),
    "cpu_attention_with_kv_cache": _left(_ATTENTION.format(what="the CPU backend's attention")),
    "flash_mla_with_kvcache_cpu": _left(_ATTENTION.format(what="the CPU backend's FlashMLA decode")),
    "cpu_attn_reshape_and_cache": _tracked("kv", "layout cpu-vec, implementation vllm-cpu (vLLM's CPU backend)"),
    "concat_and_cache_mla_cpu": _left("the CPU backend's MLA cache write; kvbench's mla op runs on CUDA devices "
                                      "(vllm-cpu's MLA path is not a kvbench implementation)"),
    "fused_qnorm_rope_kv_insert_cpu": _left(_FUSED.format(what="Q-norm + RoPE + cache insert (CPU backend)",
                                                          model="DeepSeek-V4", where="the CPU backend")),
    # DeepSeek-V4's compressor ops: vllm-cpu 0.32.0's AVX-512 library registers them (CI, 2026-12-06); its AVX2
    # library, which earlier CI hosts loaded, did not
    "compress_norm_rope_store_cpu": _left(_FUSED.format(what="compress + RMS-norm + RoPE + cache store",
                                                        model="DeepSeek-V4", where="the CPU backend's compressor")),
    "compress_norm_rope_store_indexer_cpu": _left(_FUSED.format(
        what="compress + RMS-norm + RoPE + indexer-cache store", model="DeepSeek-V4",
        where="the CPU backend's compressor")),
    "save_partial_states_cpu": _left(_FUSED.format(what="store of the compressor's partial states",
                                                   model="DeepSeek-V4", where="the CPU backend's compressor")),
}

# A _C op is a cache op when its name says so or it takes a KV cache (an argument named cache or *_cache; the RoPE
# cos/sin table is not one). Every op of _C_cache_ops is.
_NAME = re.compile(r"cache|_insert|kv_gather|^hisparse_")
# (index_q_cos_sin_cache: the RoPE table of DeepSeek-V4's indexer query RoPE + quant on vllm-cpu, which writes the
# query)
_NOT_CACHES = {"cos_sin_cache", "rope_cos_sin_cache", "index_q_cos_sin_cache"}


def is_cache_op(namespace: str, name: str, arguments: tuple[str, ...] = ()) -> bool:
    if namespace == "_C_cache_ops":
        return True
    if namespace != "_C":
        return False
    return bool(_NAME.search(name)) or any((a == "cache" or a.endswith("_cache")) and a not in _NOT_CACHES
                                           for a in arguments)


def line(name: str) -> str:
    entry = TABLE.get(name)
    return entry.line() if entry else "NOT IN kvbench's coverage table: track it or list why it is left out"


def counts() -> tuple[int, int]:
    """(tracked, left out) entries of the table."""
    tracked = sum(1 for e in TABLE.values() if e.op)
    return tracked, len(TABLE) - tracked


def _arguments(namespace: str, name: str) -> tuple[str, ...]:
    import torch

    try:
        packet = getattr(getattr(torch.ops, namespace), name)
        overload = packet.overloads()[0]
        return tuple(a.name for a in getattr(packet, overload)._schema.arguments)
    except Exception:  # an op whose schema cannot be read: judged by its name alone
        return ()


def registered() -> list[tuple[str, str]]:
    """(namespace, name) of every cache op the loaded vLLM kernel library registers, sorted; vLLM's library is
    loaded first (vllm._custom_ops): ImportError saying why where it cannot be."""
    import importlib

    import torch

    try:
        importlib.import_module("vllm._custom_ops")
    except Exception as exc:
        raise ImportError(f"vLLM's kernel library is not loaded ({type(exc).__name__}: {exc})".splitlines()[0]) \
            from exc
    found = set()
    for full in torch._C._dispatch_get_all_op_names():
        namespace, _, rest = full.partition("::")
        if namespace not in NAMESPACES:
            continue
        name = rest.split(".")[0]
        if is_cache_op(namespace, name, _arguments(namespace, name)):
            found.add((namespace, name))
    return sorted(found)


def report() -> list[str]:
    """Lines for `kvbench info`: each registered cache op with its coverage, or why none can be listed."""
    tracked, left = counts()
    head = f"kvbench's coverage table: {tracked} vLLM cache ops tracked, {left} left out (vLLM 0.20-0.34)"
    try:
        ops = registered()
    except ImportError as exc:
        return [head, f"  registered here: none listed: {exc}"]
    missing = sum(1 for _, name in ops if name not in TABLE)
    lines = [head, f"  registered by the loaded vLLM: {len(ops)} cache ops" +
             (f", {missing} NOT in the table" if missing else ", all in the table")]
    lines += [f"  {namespace}::{name}: {line(name)}" for namespace, name in ops]
    return lines
