"""`triton`: kvbench's own Triton kernels (kvbench.impls.kernels), flash NHD/HND, the served and paged layouts.

They run on CUDA devices, and on CPU tensors only under Triton's interpreter (TRITON_INTERPRET=1, for tests).
"""

from __future__ import annotations

import os

from kvbench.impls.base import Implementation, Writer
from kvbench.ops.kv import KVWorkload
from kvbench.ops.layouts import SERVED_LAYOUTS


class TritonWrite(Implementation):
    name = "triton"
    description = ("kvbench's own Triton kernel (a program per token and group of heads; paged: per 32 tokens of a "
                   "head; any strides)")
    layouts = ("nhd", "hnd", "paged") + SERVED_LAYOUTS
    per_head_scales = True
    packages = ("triton",)

    @property
    def devices(self) -> tuple[str, ...]:
        return ("cuda", "cpu") if os.environ.get("TRITON_INTERPRET") == "1" else ("cuda",)

    def load(self) -> None:
        try:
            import kvbench.impls.kernels.cache_write  # noqa: F401
        except ImportError as exc:
            raise ImportError(f"triton not installed ({exc})") from exc

    def bind(self, w: KVWorkload) -> Writer:
        from kvbench.impls.kernels.cache_write import reshape_and_cache

        args = (w.key, w.value, w.key_cache, w.value_cache, w.slot_mapping, w.case.fp8_format, w.k_scale,
                w.v_scale, w.case.layout)
        return lambda: reshape_and_cache(*args)


class _OwnKernel(Implementation):
    """kvbench's Triton kernel of another op (kvbench.impls.kernels.<op>)."""

    layouts = ()
    packages = ("triton",)
    devices = TritonWrite.devices
    load = TritonWrite.load


class TritonMLA(_OwnKernel):
    name, op = "triton", "mla"
    description = "kvbench's own Triton MLA kernel (several tokens per program; ds_mla tile scales)"
    kv_cache_dtypes = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_ds_mla")

    def bind(self, w) -> Writer:
        from kvbench.impls.kernels.mla import concat_and_cache_mla

        args = (w.kv_c, w.k_pe, w.kv_cache, w.slot_mapping, w.case.kv_cache_dtype, w.scale, w.case.skip_scale)
        return lambda: concat_and_cache_mla(*args)


class TritonIndexer(_OwnKernel):
    name, op = "triton", "indexer"
    description = "kvbench's own Triton indexer-key kernel (group scales, block-major cache)"
    kv_cache_dtypes = ("fp8",)

    def bind(self, w) -> Writer:
        from kvbench.impls.kernels.indexer import indexer_k_quant_and_cache

        args = (w.k, w.kv_cache, w.slot_mapping, w.case.scale_fmt)
        return lambda: indexer_k_quant_and_cache(*args)


class TritonTokenHeadQuant(_OwnKernel):
    name, op = "triton", "token-head-quant"
    description = "kvbench's own Triton per-token-head quantizing kernel (IEEE divisions)"
    kv_cache_dtypes = ("int8", "fp8")

    def bind(self, w) -> Writer:
        from kvbench.impls.kernels.token_head_quant import reshape_and_cache_per_token_head

        args = (w.key, w.value, w.key_cache, w.value_cache, w.k_scale_cache, w.v_scale_cache, w.slot_mapping,
                w.case.kv_cache_dtype)
        return lambda: reshape_and_cache_per_token_head(*args)


class TritonConvertFp8(_OwnKernel):
    name, op = "triton", "convert-fp8"
    description = "kvbench's own Triton convert_fp8 (contiguous tiles; IEEE division, round to nearest)"
    kv_cache_dtypes = ("fp8", "fp8_e4m3", "fp8_e5m2")

    def bind(self, w) -> Writer:
        from kvbench.impls.kernels.convert_fp8 import convert_fp8

        args = (w.dst, w.src, w.scale_value, w.case.fp8_format)
        return lambda: convert_fp8(*args)


class TritonGather(_OwnKernel):
    name, op = "triton", "gather"
    description = "kvbench's own Triton gather (several rows per program; fp8 dequantized)"
    kv_cache_dtypes = ("auto", "fp8", "fp8_e4m3")

    def bind(self, w) -> Writer:
        from kvbench.impls.kernels.gather import gather_rows

        b, c = w.batch, w.case
        kwargs = dict(seq_starts=b.seq_starts, token_to_seq=b.token_to_seq, fp8=c.fp8_format, scale=w.scale)
        args = (w.src_cache, w.dst, b.block_table, b.cu_seq_lens, c.num_tokens)
        return lambda: gather_rows(*args, **kwargs)


class TritonCpGather(_OwnKernel):
    name, op = "triton", "cp-gather"
    description = "kvbench's own Triton cp_gather (several rows per program; sequence by binary search)"
    kv_cache_dtypes = ("auto", "fp8")

    def bind(self, w) -> Writer:
        from kvbench.impls.kernels.gather import gather_rows

        b = w.batch
        args = (w.src_cache, w.dst, b.block_table, b.cu_seq_lens, w.case.num_tokens, b.seq_starts)
        return lambda: gather_rows(*args)


class TritonIndexerGather(_OwnKernel):
    name, op = "triton", "indexer-gather"
    description = "kvbench's own Triton indexer-key gather (codes and 4-byte scales, many rows per program)"
    kv_cache_dtypes = ("fp8",)

    def bind(self, w) -> Writer:
        from kvbench.impls.kernels.read_rows import indexer_gather

        args = (w.kv_cache, w.dst_k, w.dst_scale, w.batch.block_table, w.batch.cu_seq_lens)
        return lambda: indexer_gather(*args)


class TritonUpconvertGather(_OwnKernel):
    name, op = "triton", "upconvert-gather"
    description = "kvbench's own Triton fp8_ds_mla gather into bf16 (tile scales, rope copied)"
    kv_cache_dtypes = ("fp8_ds_mla",)

    def bind(self, w) -> Writer:
        from kvbench.impls.kernels.read_rows import upconvert_gather

        b = w.batch
        args = (w.src_cache, w.dst, b.block_table, b.cu_seq_lens, w.case.num_tokens, b.seq_starts)
        return lambda: upconvert_gather(*args)
