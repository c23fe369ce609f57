"""`torch`: each op's reference in plain torch ops, every layout, dtype and device.

It is also the baseline a user would write by hand (quantize, then one indexed copy per cache), and it can be
captured in a CUDA graph (padding is skipped without a host sync; kvbench.ops.kv.reference_write).
"""

from __future__ import annotations

from kvbench.impls.base import Implementation, Writer
from kvbench.ops import (concat_mla_q, convert_fp8, cp_gather, gather, indexer, indexer_gather, layouts, mla,
                         mla_grouped, mla_rope, swap_blocks, token_head_quant, upconvert_gather)
from kvbench.ops.kv import KVWorkload, reference_write


class TorchReference(Implementation):
    name = "torch"
    description = "reference in plain torch ops (quantize + indexed copy); the hand-written baseline"
    devices = ("cuda", "cpu")
    layouts = ("nhd",) + tuple(layout for layout in layouts.LAYOUTS if layout != "nhd")
    per_head_scales = True

    def bind(self, w: KVWorkload) -> Writer:
        def run():
            reference_write(w.case, w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, w.k_scale, w.v_scale)

        return run


class _TorchOf(Implementation):
    """The torch reference of an op whose module has `reference_write(workload)`."""

    devices = ("cuda", "cpu")
    layouts = ()

    def bind(self, w) -> Writer:
        return lambda: self.module.reference_write(w)


class TorchMLA(_TorchOf):
    name, op, module = "torch", "mla", mla
    description = "reference in plain torch ops (concatenate, quantize, indexed copy)"
    kv_cache_dtypes = mla.Case.KV_CACHE_DTYPES


class TorchIndexer(_TorchOf):
    name, op, module = "torch", "indexer", indexer
    description = "reference in plain torch ops (group scales, quantize, indexed copies)"
    kv_cache_dtypes = indexer.Case.KV_CACHE_DTYPES


class TorchTokenHeadQuant(_TorchOf):
    name, op, module = "torch", "token-head-quant", token_head_quant
    description = "reference in plain torch ops (per token-head scales, quantize, indexed copies)"
    kv_cache_dtypes = token_head_quant.Case.KV_CACHE_DTYPES


class TorchConvertFp8(_TorchOf):
    name, op, module = "torch", "convert-fp8", convert_fp8
    description = "reference in plain torch ops (fp8 view, multiply or divide, cast)"
    kv_cache_dtypes = convert_fp8.Case.KV_CACHE_DTYPES


class TorchGather(_TorchOf):
    name, op, module = "torch", "gather", gather
    description = "reference in plain torch ops (source slots from the tables, index_select, dequantize)"
    kv_cache_dtypes = gather.Case.KV_CACHE_DTYPES


class TorchCpGather(_TorchOf):
    name, op, module = "torch", "cp-gather", cp_gather
    description = "reference in plain torch ops (sequence by searchsorted, source slots, index_select)"
    kv_cache_dtypes = cp_gather.Case.KV_CACHE_DTYPES


class TorchSwapBlocks(_TorchOf):
    name, op, module = "torch", "swap-blocks", swap_blocks
    description = "torch's own copies: index_select + index_copy_ on one device, copy_ per block across devices"
    kv_cache_dtypes = swap_blocks.Case.KV_CACHE_DTYPES


class TorchIndexerGather(_TorchOf):
    name, op, module = "torch", "indexer-gather", indexer_gather
    description = "reference in plain torch ops (source slots, indexed reads of the block-major views)"
    kv_cache_dtypes = indexer_gather.Case.KV_CACHE_DTYPES


class TorchUpconvertGather(_TorchOf):
    name, op, module = "torch", "upconvert-gather", upconvert_gather
    description = "reference in plain torch ops (index_select, codes x tile scales, rope copied)"
    kv_cache_dtypes = upconvert_gather.Case.KV_CACHE_DTYPES


class TorchMLAGrouped(_TorchOf):
    name, op, module = "torch", "mla-grouped", mla_grouped
    description = "reference in plain torch ops (per layer: concatenate, quantize, indexed copy)"
    kv_cache_dtypes = mla_grouped.Case.KV_CACHE_DTYPES


class TorchConcatMLAQ(_TorchOf):
    name, op, module = "torch", "concat-mla-q", concat_mla_q
    description = "torch.cat into the workspace (what vLLM's op replaces)"
    kv_cache_dtypes = ("auto",)


class TorchMLARope(_TorchOf):
    name, op, module = "torch", "mla-rope", mla_rope
    description = "reference in plain torch ops (rotations rounded as vLLM's 16-bit arithmetic, indexed copy)"
    kv_cache_dtypes = mla_rope.Case.KV_CACHE_DTYPES
