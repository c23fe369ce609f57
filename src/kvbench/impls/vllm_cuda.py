"""Adapters to vLLM's CUDA KV-cache write ops (`vllm._custom_ops`) and vLLM's Triton flash op.

All take `op(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale, v_scale)` with scales as
float32 device tensors (vLLM >= Jan 2025). The flash ops read the layout from the caches' shape and strides:
block_size = key_cache.size(1), so HND storage ([blocks, heads, block_size, head_size] in memory) must be passed
as its NHD-shaped view (dims 1 and 2 swapped, HND strides), as vLLM's attention backends pass it; the HND-shaped
tensor itself makes them read block_size = num_heads and write the wrong places. Imports are guarded: without a
CUDA build of vLLM these implementations report why they are unavailable.
"""

from __future__ import annotations

import importlib

from kvbench.impls.base import Implementation, Writer
from kvbench.ops.kv import KVWorkload
from kvbench.ops.layouts import FLASH_LAYOUTS

TRITON_MODULES = (
    "vllm.v1.attention.ops.triton_reshape_and_cache_flash",  # since Jan 2026
    "vllm.attention.ops.triton_reshape_and_cache_flash",
)


def _vllm_ops():
    """vllm._custom_ops, or raise ImportError with the reason."""
    try:
        return importlib.import_module("vllm._custom_ops")
    except Exception as exc:  # vllm raises various errors when its native parts are missing
        raise ImportError(f"vllm not installed ({type(exc).__name__}: {exc})".splitlines()[0]) from exc


def triton_op(name: str):
    """vLLM's Triton function `name`, from whichever module it lives in in this vLLM, or ImportError."""
    errors = []
    for module in TRITON_MODULES:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            errors.append(f"{module}: {exc}")
    raise ImportError(f"vllm's Triton op {name} not found (" + "; ".join(errors) + ")")


def torch_ops():
    """torch.ops._C_cache_ops, with vLLM's library loaded."""
    import torch

    _vllm_ops()
    return torch.ops._C_cache_ops


def vllm_version() -> str:
    """'vllm 0.34.0' (for messages)."""
    from kvbench.measure import machine

    return f"vllm {machine.vllm_version() or '?'}"


def has_argument(op_name: str, argument: str) -> bool:
    """Whether vLLM's compiled op `op_name` takes `argument` (read from its schema)."""
    import torch

    schema = getattr(torch.ops._C_cache_ops, op_name).default._schema
    return any(a.name == argument for a in schema.arguments)


def flash_args(w: KVWorkload) -> tuple:
    """The eight arguments of vLLM's flash ops; HND caches as their NHD-shaped views."""
    key_cache, value_cache = w.key_cache, w.value_cache
    if w.case.layout == "hnd":
        key_cache, value_cache = key_cache.transpose(1, 2), value_cache.transpose(1, 2)
    return (w.key, w.value, key_cache, value_cache, w.slot_mapping, w.case.kv_cache_dtype, w.k_scale, w.v_scale)


class _VllmCudaOp(Implementation):
    op_name = ""
    packages = ("vllm",)

    def load(self) -> None:
        if not hasattr(torch_ops(), self.op_name):
            raise ImportError(f"this vllm build has no torch.ops._C_cache_ops.{self.op_name} (a CPU build?)")

    def bind(self, w: KVWorkload) -> Writer:
        op = getattr(_vllm_ops(), self.op_name)
        args = flash_args(w)
        return lambda: op(*args)


class VllmPaged(_VllmCudaOp):
    name = "vllm"
    description = "vLLM's CUDA reshape_and_cache (paged layout; paged-iv: interleaved_v=True, vLLM >= 0.33)"
    layouts = ("paged", "paged-iv")
    op_name = "reshape_and_cache"
    compare = "tolerance"  # not measured bit-exact on a GPU; vLLM's own test tolerance

    def capability_reason(self, case) -> str | None:
        if case.layout == "paged-iv" and not has_argument(self.op_name, "interleaved_v"):
            return f"this vLLM ({vllm_version()}) has no interleaved_v argument (new in vLLM 0.33)"
        return None

    def bind(self, w: KVWorkload) -> Writer:
        if w.case.layout != "paged-iv":
            return super().bind(w)
        op = _vllm_ops().reshape_and_cache
        args = flash_args(w) + (True,)
        return lambda: op(*args)


class VllmFlash(_VllmCudaOp):
    name = "vllm-flash"
    description = "vLLM's CUDA reshape_and_cache_flash (NHD/HND and the layouts vLLM's backends serve)"
    layouts = FLASH_LAYOUTS
    per_head_scales = True
    op_name = "reshape_and_cache_flash"


class VllmTriton(Implementation):
    name = "vllm-triton"
    description = "vLLM's Triton triton_reshape_and_cache_flash (NHD/HND and the layouts vLLM's backends serve)"
    layouts = FLASH_LAYOUTS
    packages = ("vllm",)
    # It divides approximately on NVIDIA GPUs (Triton's `/`): with float32 input, 2 of 12.6 M fp8 values were one
    # step from round-to-nearest (vLLM 0.33, H200); its e5m2 bytes are e4m3 (a defect, reported as such).
    compare = "step"

    def _function(self):
        return triton_op("triton_reshape_and_cache_flash")

    def load(self) -> None:
        _vllm_ops()
        self._function()

    def bind(self, w: KVWorkload) -> Writer:
        fn = self._function()
        args = flash_args(w)
        return lambda: fn(*args)


class VllmMLA(_VllmCudaOp):
    name = "vllm"
    op = "mla"
    description = "vLLM's CUDA concat_and_cache_mla (MLA latent cache; fp8_ds_mla rows)"
    layouts = ()
    kv_cache_dtypes = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_ds_mla")
    op_name = "concat_and_cache_mla"

    def capability_reason(self, case) -> str | None:
        if case.skip_scale and not has_argument(self.op_name, "skip_scale"):
            return f"this vLLM ({vllm_version()}) has no skip_scale argument"
        return None

    def bind(self, w) -> Writer:
        op = getattr(torch_ops(), self.op_name)
        args = (w.kv_c, w.k_pe, w.kv_cache, w.slot_mapping, w.case.kv_cache_dtype, w.scale)
        args += (True,) if w.case.skip_scale else ()
        return lambda: op(*args)


class VllmIndexer(_VllmCudaOp):
    name = "vllm"
    op = "indexer"
    description = "vLLM's CUDA indexer_k_quant_and_cache (DeepSeek V3.2 indexer keys)"
    layouts = ()
    kv_cache_dtypes = ("fp8",)
    op_name = "indexer_k_quant_and_cache"

    def bind(self, w) -> Writer:
        from kvbench.ops.indexer import QUANT_BLOCK, SCALE_FORMATS

        op = getattr(torch_ops(), self.op_name)
        args = (w.k, w.kv_cache, w.slot_mapping, QUANT_BLOCK, SCALE_FORMATS[w.case.scale_fmt])
        return lambda: op(*args)


class VllmTokenHeadQuant(Implementation):
    name = "vllm-triton"
    op = "token-head-quant"
    description = "vLLM's Triton triton_reshape_and_cache_flash_per_token_head_quant (int8/fp8, NHD)"
    layouts = ()
    kv_cache_dtypes = ("int8", "fp8")
    packages = ("vllm",)
    compare = "step"  # vLLM's Triton divides approximately on NVIDIA GPUs: scales within 2 ulp, codes within 1

    def _function(self):
        return triton_op("triton_reshape_and_cache_flash_per_token_head_quant")  # vLLM >= 0.33

    def load(self) -> None:
        _vllm_ops()
        self._function()

    def bind(self, w) -> Writer:
        from vllm.v1.kv_cache_interface import KVQuantMode

        fn = self._function()
        mode = KVQuantMode.INT8_PER_TOKEN_HEAD if w.case.kv_cache_dtype == "int8" else KVQuantMode.FP8_PER_TOKEN_HEAD
        args = (w.key, w.value, w.key_cache, w.value_cache, w.k_scale_cache, w.v_scale_cache, w.slot_mapping, mode)
        return lambda: fn(*args)


# The read side, block copies and the other cache ops: vLLM's compiled ops found at run time in whichever namespace
# the installed vLLM registers them (torch.ops._C_cache_ops for the cache library's, torch.ops._C for model-specific
# fused ones), their schemas checked against the arguments kvbench passes.
CACHE_NAMESPACES = ("_C_cache_ops", "_C")


def cache_op(name: str):
    """vLLM's compiled op `name` (an OpOverloadPacket) from _C_cache_ops or _C, or ImportError saying it is not
    registered by this vLLM."""
    import torch

    _vllm_ops()
    for namespace in CACHE_NAMESPACES:
        space = getattr(torch.ops, namespace)
        if hasattr(space, name):
            return getattr(space, name)
    raise ImportError(f"this vLLM ({vllm_version()}) registers no {name} (looked in torch.ops._C_cache_ops and "
                      f"torch.ops._C)")


def argument_names(op) -> tuple[str, ...]:
    """The argument names of a compiled op's schema."""
    return tuple(a.name for a in op.default._schema.arguments)


class _VllmCacheOp(Implementation):
    """vLLM's compiled op `op_name`, called with the arguments `arguments` (the schema's leading argument names, in
    order; optional trailing ones are left at their defaults unless a subclass passes them). A vLLM without the op,
    or whose schema differs, makes the implementation unavailable, saying which and how in one line."""

    op_name = ""
    arguments: tuple[str, ...] = ()
    layouts = ()
    packages = ("vllm",)

    def _op(self):
        op = cache_op(self.op_name)
        have = argument_names(op)
        if have[: len(self.arguments)] != self.arguments:
            raise ImportError(f"this vLLM's ({vllm_version()}) {self.op_name} takes ({', '.join(have)}); kvbench's "
                              f"adapter passes ({', '.join(self.arguments)})")
        return op

    def load(self) -> None:
        self._op()

    def has(self, argument: str) -> bool:
        return argument in argument_names(cache_op(self.op_name))

    def call_args(self, w) -> tuple:
        """The arguments one call passes, from the workload `w`."""
        raise NotImplementedError

    def bind(self, w) -> Writer:
        op, args = self._op(), self.call_args(w)
        return lambda: op(*args)


class VllmConvertFp8(_VllmCacheOp):
    name, op = "vllm", "convert-fp8"
    description = "vLLM's CUDA convert_fp8 (a whole cache between fp8 codes and 16/32-bit values)"
    kv_cache_dtypes = ("fp8", "fp8_e4m3", "fp8_e5m2")
    op_name = "convert_fp8"
    arguments = ("dst_cache", "src_cache", "scale", "kv_cache_dtype")

    def capability_reason(self, case) -> str | None:
        """Releases whose convert_fp8 does not take fp8_e5m2 say so (a one-element trial call)."""
        if case.kv_cache_dtype != "fp8_e5m2" or case.device != "cuda":
            return None
        import torch

        src = torch.zeros(1, 1, dtype=torch.uint8, device="cuda")
        dst = torch.empty(1, 1, dtype=torch.bfloat16, device="cuda")
        try:
            self._op()(dst, src, 1.0, "fp8_e5m2")
            torch.cuda.synchronize()
        except RuntimeError as exc:
            return f"this vLLM ({vllm_version()}) refuses kv_cache_dtype 'fp8_e5m2' ({str(exc).splitlines()[0]})"
        return None

    def call_args(self, w) -> tuple:
        return w.dst, w.src, w.scale_value, w.case.kv_cache_dtype


class VllmGather(_VllmCacheOp):
    name, op = "vllm", "gather"
    description = "vLLM's CUDA gather_and_maybe_dequant_cache (MLA context rows, fp8 dequantized)"
    kv_cache_dtypes = ("auto", "fp8", "fp8_e4m3")
    op_name = "gather_and_maybe_dequant_cache"
    arguments = ("src_cache", "dst", "block_table", "cu_seq_lens", "token_to_seq", "num_tokens", "kv_cache_dtype",
                 "scale", "seq_starts")

    def unsupported_reason(self, case) -> str | None:
        if case.entry != 576:
            return f"vLLM's kernel takes 576-wide rows only (kv_lora_rank + pe_dim = {case.entry})"
        return super().unsupported_reason(case)

    def call_args(self, w) -> tuple:
        b = w.batch
        return (w.src_cache, w.dst, b.block_table, b.cu_seq_lens, b.token_to_seq, w.case.num_tokens,
                w.case.kv_cache_dtype, w.scale, b.seq_starts)


class VllmCpGather(_VllmCacheOp):
    name, op = "vllm", "cp-gather"
    description = "vLLM's CUDA cp_gather_cache (cache rows copied as they are; starts inside blocks)"
    kv_cache_dtypes = ("auto", "fp8")
    op_name = "cp_gather_cache"
    arguments = ("src_cache", "dst", "block_table", "cu_seq_lens", "batch_size", "seq_starts")

    def call_args(self, w) -> tuple:
        """(also the upconverting gather's: its workspace_starts are the batch's cu_seq_lens)"""
        b = w.batch
        return w.src_cache, w.dst, b.block_table, b.cu_seq_lens, b.num_seqs, b.seq_starts


class VllmSwapBlocks(_VllmCacheOp):
    name, op = "vllm", "swap-blocks"
    description = "vLLM's swap_blocks (one cudaMemcpyAsync per block, one call per layer)"
    kv_cache_dtypes = ("auto", "fp8")
    op_name = "swap_blocks"
    arguments = ("src", "dst", "block_size_in_bytes", "block_mapping")

    def bind(self, w) -> Writer:
        op, c = self._op(), w.case
        calls = [(w.layer(w.src, i), w.layer(w.dst, i), c.page_bytes, w.block_mapping) for i in range(c.num_layers)]

        def run():
            for args in calls:
                op(*args)

        return run


class VllmSwapBlocksBatch(_VllmCacheOp):
    name, op = "vllm-batch", "swap-blocks"
    description = "vLLM's swap_blocks_batch (every layer's pages in one batched driver call, as its offloading does)"
    kv_cache_dtypes = ("auto", "fp8")
    op_name = "swap_blocks_batch"
    arguments = ("src_ptrs", "dst_ptrs", "sizes")
    graph_reason = ("vLLM's swap_blocks_batch submits cuMemcpyBatchAsync, which a CUDA graph cannot capture (CUDA "
                    "error 900 with vLLM 0.34.0 on an H100)")

    def bind(self, w) -> Writer:
        import torch

        op, c = self._op(), w.case
        src_blocks, dst_blocks = w.block_mapping[:, 0], w.block_mapping[:, 1]
        layers = torch.arange(c.num_layers)[:, None]
        layer_bytes = c.num_blocks * c.page_bytes
        src_ptrs = (w.src.data_ptr() + layers * layer_bytes + src_blocks * c.page_bytes).flatten().contiguous()
        dst_ptrs = (w.dst.data_ptr() + layers * layer_bytes + dst_blocks * c.page_bytes).flatten().contiguous()
        sizes = torch.full_like(src_ptrs, c.page_bytes)
        extra = ()
        if self.has("is_src_access_order_any"):  # vLLM >= 0.21; set as its offloading sets it: for loads only
            extra = (w.src.device.type == "cpu",)
        return lambda: op(src_ptrs, dst_ptrs, sizes, *extra)


class VllmIndexerGather(_VllmCacheOp):
    name, op = "vllm", "indexer-gather"
    description = "vLLM's CUDA cp_gather_indexer_k_quant_cache (V3.2 indexer keys and scales)"
    kv_cache_dtypes = ("fp8",)
    op_name = "cp_gather_indexer_k_quant_cache"
    arguments = ("kv_cache", "dst_k", "dst_scale", "block_table", "cu_seq_lens")

    def call_args(self, w) -> tuple:
        b = w.batch
        return w.kv_cache, w.dst_k, w.dst_scale, b.block_table, b.cu_seq_lens


class VllmUpconvertGather(_VllmCacheOp):
    name, op = "vllm", "upconvert-gather"
    description = "vLLM's CUDA cp_gather_and_upconvert_fp8_kv_cache (fp8_ds_mla rows into bf16; vLLM >= 0.26)"
    kv_cache_dtypes = ("fp8_ds_mla",)
    op_name = "cp_gather_and_upconvert_fp8_kv_cache"
    arguments = ("src_cache", "dst", "block_table", "workspace_starts", "batch_size", "seq_starts")

    def call_args(self, w) -> tuple:
        """cp_gather's arguments with dst as exactly the rows gathered: vLLM's kernel (0.34) writes every row of
        dst, its row count being the tokens' (rows past them would get rows of the last sequence)."""
        src_cache, dst, *rest = VllmCpGather.call_args(self, w)
        return (src_cache, dst[: w.case.num_tokens], *rest)


class VllmMLAGrouped(_VllmCacheOp):
    name, op = "vllm", "mla-grouped"
    description = "vLLM's CUDA concat_and_cache_mla_grouped (several layers' MLA rows in one launch; vLLM >= 0.27)"
    kv_cache_dtypes = ("auto", "fp8", "fp8_e4m3")
    op_name = "concat_and_cache_mla_grouped"
    arguments = ("kv_c", "k_pe", "kv_cache_ptrs", "slot_mapping", "block_size", "block_stride", "entry_stride")

    def unsupported_reason(self, case) -> str | None:
        if case.dtype != "bfloat16":
            return (f"vLLM's grouped MLA insert takes bf16 inputs only (its kernel refuses {case.dtype}: "
                    f"'concat_and_cache_mla_grouped requires BF16 inputs')")
        return super().unsupported_reason(case)

    def capability_reason(self, case) -> str | None:
        if case.kv_cache_dtype != "auto" and not self.has("kv_cache_dtype"):
            return f"this vLLM ({vllm_version()}) takes no kv_cache_dtype here (bf16 caches only, before 0.30)"
        return None

    def call_args(self, w) -> tuple:
        """kv_scales only for an fp8 cache (0.34's kernel refuses them for a bf16 one)."""
        c, cache = w.case, w.caches[0]
        args = (w.kv_c, w.k_pe, w.kv_cache_ptrs, w.layer_slots, c.block_size, cache.stride(0), cache.stride(1))
        scales = w.kv_scales if c.kv_cache_dtype != "auto" else None
        return args + ((scales, c.kv_cache_dtype) if self.has("kv_cache_dtype") else ())


class VllmConcatMLAQ(_VllmCacheOp):
    name, op = "vllm", "concat-mla-q"
    description = "vLLM's CUDA concat_mla_q (MLA queries for FlashMLA; strided inputs)"
    kv_cache_dtypes = ("auto",)
    op_name = "concat_mla_q"
    arguments = ("ql_nope", "q_pe", "q_out")

    def unsupported_reason(self, case) -> str | None:
        if case.kv_lora_rank % 512 or case.pe_dim != 64:
            return f"vLLM's kernel takes kv_lora_rank a multiple of 512 and pe_dim 64 (got {case.kv_lora_rank}, " \
                   f"{case.pe_dim})"
        return super().unsupported_reason(case)

    def call_args(self, w) -> tuple:
        return w.ql_nope, w.q_pe, w.q_out


class VllmMLARope(_VllmCacheOp):
    name, op = "vllm", "mla-rope"
    description = "vLLM's CUDA concat_and_cache_mla_rope_fused (RoPE on q_pe and k_pe, then the MLA cache write)"
    kv_cache_dtypes = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
    op_name = "concat_and_cache_mla_rope_fused"
    arguments = ("positions", "q_pe", "k_pe", "kv_c", "cos_sin_cache", "is_neox", "slot_mapping", "kv_cache",
                 "kv_cache_dtype", "kv_cache_scale")

    def call_args(self, w) -> tuple:
        c = w.case
        return (w.positions, w.q_pe, w.k_pe, w.kv_c, w.cos_sin_cache, c.is_neox, w.slot_mapping, w.kv_cache,
                c.kv_cache_dtype, w.scale)
