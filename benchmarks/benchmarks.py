"""asv benchmarks of vLLM's KV-cache writes: each class is params, a `case` that builds what they describe, and
`time_*` / `track_*` methods. Every case is verified against the reference before it is timed and on its timed path
(kvbench.runner says when); a wrong result is a failed benchmark, never a number.

The timed bodies are empty but for `self.sample()` because the clock is kvbench's (`suite.PerCallTimer`): asv reads
it around each body, and the body takes one sample (a CUDA graph of K calls between CUDA events, divided by K), so
each asv sample is one call's device time rather than the host time of launching a graph.

Times are per call: `time_cudagraph` on CUDA, `time_no_graph` (CPU time) on a CPU-only machine. Unless a class
says otherwise the L2 is warm and slots random (vLLM's method). KVBENCH_IMPLEMENTATIONS (a comma list) narrows every
class, KVBENCH_NUM_TOKENS and KVBENCH_DTYPES the main grid (KVCacheWrite, KVCacheWriteBF16; the other classes keep
their own sizes); KVBENCH_EAGER=1 adds the host-bound eager times on CUDA.
"""

from kvbench.asv import suite
from kvbench.errors import Unavailable
from kvbench.asv.suite import DEVICE, DTYPES, IMPLEMENTATIONS, NUM_BLOCKS, NUM_TOKENS
from kvbench.ops import indexer, kv, mla, token_head_quant


class _PrimaryTime(suite.Benchmark):
    """This machine's primary time: `time_cudagraph` on CUDA, `time_no_graph` (CPU time) on CPU."""

    if DEVICE == "cuda":

        def time_cudagraph(self, *params):
            self.sample()

    else:

        def time_no_graph(self, *params):
            self.sample()


class KVCacheWrite(_PrimaryTime):
    """Main grid: tokens 2..65536 x input dtype x cache dtype x implementation, vLLM's default shapes."""

    params = [NUM_TOKENS, DTYPES, ["auto", "fp8"], IMPLEMENTATIONS, [NUM_BLOCKS]]
    param_names = ["num_tokens", "dtype", "kv_cache_dtype", "implementation", "num_blocks"]
    version = "kvcachewrite-2"

    def case(self, num_tokens, dtype, kv_cache_dtype, implementation, num_blocks):
        return kv.Case(num_tokens=num_tokens, dtype=dtype, kv_cache_dtype=kv_cache_dtype, num_blocks=num_blocks,
                       layout=suite.layout_of(implementation), device=DEVICE)


class _BF16(suite.Benchmark):
    params = [NUM_TOKENS, ["auto", "fp8"], IMPLEMENTATIONS, [NUM_BLOCKS]]
    param_names = ["num_tokens", "kv_cache_dtype", "implementation", "num_blocks"]

    def case(self, num_tokens, kv_cache_dtype, implementation, num_blocks):
        return kv.Case(num_tokens=num_tokens, kv_cache_dtype=kv_cache_dtype, num_blocks=num_blocks,
                       layout=suite.layout_of(implementation), device=DEVICE)


class KVCacheWriteBF16(_BF16):
    """bfloat16 input: primary time / ideal time at the measured copy bandwidth (1.0 = the hardware limit). Where
    KVCacheWrite timed the same case earlier in the run (asv runs it first), its samples are used, not retaken."""

    version = "kvcachewritebf16-2"

    def track_x_ideal(self, *params):
        return self.x_ideal()

    track_x_ideal.unit = "x ideal"


if DEVICE == "cuda" and suite.EAGER:

    class KVCacheWriteEager(_BF16):
        """bfloat16 input, eager calls: per-call time including launch overhead (opt-in: KVBENCH_EAGER=1)."""

        version = "kvcachewriteeager-1"
        mode = "no_graph"

        def time_no_graph(self, *params):
            self.sample()


class KVCacheWriteShapes(_PrimaryTime):
    """vLLM's script's head configurations and block sizes, bf16 input, auto cache dtype."""

    params = [[16, 1024, 16384], ["32x128", "128x128", "64x256"], [16, 32], IMPLEMENTATIONS, [NUM_BLOCKS]]
    param_names = ["num_tokens", "heads_x_head_size", "block_size", "implementation", "num_blocks"]
    version = "kvcachewriteshapes-2"

    def case(self, num_tokens, heads_x_head_size, block_size, implementation, num_blocks):
        heads, head_size = (int(v) for v in heads_x_head_size.split("x"))
        return kv.Case(num_tokens=num_tokens, num_heads=heads, head_size=head_size, block_size=block_size,
                       num_blocks=num_blocks, layout=suite.layout_of(implementation), device=DEVICE)


class KVCacheWritePatterns(_PrimaryTime):
    """Slot patterns (random, prefill, decode, padded) and L2 state (warm: same inputs each call; cold: rotated)."""

    params = [[16, 1024, 65536], ["random", "prefill", "decode", "padded"], ["warm", "cold"], IMPLEMENTATIONS,
              [NUM_BLOCKS]]
    param_names = ["num_tokens", "slots", "l2", "implementation", "num_blocks"]
    version = "kvcachewritepatterns-1"

    def case(self, num_tokens, slots, l2, implementation, num_blocks):
        return kv.Case(num_tokens=num_tokens, slots=slots, l2=l2, num_blocks=num_blocks,
                       layout=suite.layout_of(implementation), device=DEVICE)


FAMILY_TOKENS = [2, 16, 64, 256, 1024, 4096, 16384, 65536]


class KVCacheWriteInterleavedV(_PrimaryTime):
    """reshape_and_cache with interleaved_v=True (layout paged-iv, vLLM >= 0.33), bf16: vLLM's script's heads."""

    params = [[16, 1024, 16384], ["32x128", "128x128"], suite.implementations("kv"), [NUM_BLOCKS]]
    param_names = ["num_tokens", "heads_x_head_size", "implementation", "num_blocks"]
    version = "kvcachewriteinterleavedv-1"

    def case(self, num_tokens, heads_x_head_size, implementation, num_blocks):
        heads, head_size = (int(v) for v in heads_x_head_size.split("x"))
        return kv.Case(num_tokens=num_tokens, num_heads=heads, head_size=head_size, num_blocks=num_blocks,
                       layout="paged-iv", device=DEVICE)


TORCH_COLD_MLA_FROM = 1024  # the torch reference's cold MLA cases start here (MLAWrite)


COLD_MLA_BLOCKS = 8192


class MLAWrite(_PrimaryTime):
    """concat_and_cache_mla, DeepSeek's 512 + 64, block 64, bf16 input: auto, fp8 and fp8_ds_mla rows; warm L2
    (vLLM's method) and cold (inputs rotated past 4x the L2). The torch reference is timed cold from 1024 tokens:
    below, a sample replays a rotation of 2048 input sets of its ~20 kernels a call, 4-6 s a case (a fifth of the
    suite's time on an H200), for a baseline nobody reads at that size (its warm figures stand)."""

    params = [FAMILY_TOKENS, ["auto", "fp8", "fp8_ds_mla"], ["warm", "cold"], suite.implementations("mla")]
    param_names = ["num_tokens", "kv_cache_dtype", "l2", "implementation"]
    version = "mlawrite-1"

    def case(self, num_tokens, kv_cache_dtype, l2, implementation):
        if implementation == "torch" and l2 == "cold" and num_tokens < TORCH_COLD_MLA_FROM:
            raise Unavailable(f"torch: the reference is timed cold from {TORCH_COLD_MLA_FROM} tokens (below, its "
                              f"rotation of 2048 input sets costs seconds a case; its warm figures stand)")
        # a cold rotation must touch 4x the L2 (kvbench.runner.rotation_size): on a GPU the cold cases get a cache of
        # 8192 blocks, room for 4x an H200's L2 of fp8 rows at every size (the default 2048 hold 216 MiB of them)
        blocks = {"num_blocks": COLD_MLA_BLOCKS} if l2 == "cold" and DEVICE == "cuda" else {}
        return mla.Case(num_tokens=num_tokens, kv_cache_dtype=kv_cache_dtype, l2=l2, device=DEVICE, **blocks)


class IndexerWrite(_PrimaryTime):
    """indexer_k_quant_and_cache, DeepSeek V3.2's 128-dim keys, block 64, bf16 input, ue8m0 scales."""

    params = [FAMILY_TOKENS, suite.implementations("indexer")]
    param_names = ["num_tokens", "implementation"]
    version = "indexerwrite-1"

    def case(self, num_tokens, implementation):
        return indexer.Case(num_tokens=num_tokens, device=DEVICE)


class TokenHeadQuantWrite(_PrimaryTime):
    """Per-token-head quantized KV write (vLLM's Triton op), 8 KV heads x 128, block 16, bf16 input."""

    params = [FAMILY_TOKENS, ["int8", "fp8"], suite.implementations("token-head-quant")]
    param_names = ["num_tokens", "kv_cache_dtype", "implementation"]
    version = "tokenheadquantwrite-1"

    def case(self, num_tokens, kv_cache_dtype, implementation):
        return token_head_quant.Case(num_tokens=num_tokens, kv_cache_dtype=kv_cache_dtype, device=DEVICE)


SERVED_TOKENS = [16, 512, 8192]
SERVED_BATCHES = ["decode-padded", "mixed", "prefill"]


class Served(_PrimaryTime):
    """vLLM's KV-cache writes as vLLM serves them: real models' KV heads on one GPU (Llama-3.1-8B: 8 x 128;
    Llama-3.1-70B on 8 GPUs: 1 x 128; GPT-OSS-120B: 8 x 64; and vLLM's benchmark's 128 x 128), serving batches from
    a block table (a decode batch padded to its CUDA graph, chunked prefill with decodes, prefill chunks), in the
    layout and block size the installed vLLM's attention backend passes (flash-attn; vllm-triton: triton-attn;
    kvbench.ops.served), bf16 input, auto and fp8 caches."""

    params = [SERVED_TOKENS, ["llama-3.1-8b", "llama-3.1-70b:tp8", "gpt-oss-120b", "vllm-benchmark"], SERVED_BATCHES,
              ["auto", "fp8"], suite.served_implementations()]
    param_names = ["num_tokens", "model", "batch", "kv_cache_dtype", "implementation"]
    version = "served-1"

    def case(self, num_tokens, model, batch, kv_cache_dtype, implementation):
        return suite.served_case(model, implementation, num_tokens=num_tokens, slots=batch,
                                 kv_cache_dtype=kv_cache_dtype)


class ServedMLA(_PrimaryTime):
    """DeepSeek's cache writes as vLLM serves them: V3's MLA latent rows (512 + 64) with a bf16 and an fp8 cache,
    V3.2's sparse-FlashMLA rows (fp8_ds_mla, block 64) and its indexer keys; the serving batches of Served."""

    WRITES = {"v3-mla-auto": ("deepseek-v3", "mla", "auto"), "v3-mla-fp8": ("deepseek-v3", "mla", "fp8"),
              "v3.2-mla-fp8_ds_mla": ("deepseek-v3.2", "mla", "fp8_ds_mla"),
              "v3.2-indexer": ("deepseek-v3.2", "indexer", "fp8")}
    params = [SERVED_TOKENS, list(WRITES), SERVED_BATCHES, suite.implementations("mla")]
    param_names = ["num_tokens", "write", "batch", "implementation"]
    version = "servedmla-2"  # 2: fp8 MLA served with skip_scale (scale 1.0), V3.2 at block 64

    def case(self, num_tokens, write, batch, implementation):
        model, op, kv_cache_dtype = self.WRITES[write]
        return suite.served_case(model, implementation, op=op, num_tokens=num_tokens, slots=batch,
                                 kv_cache_dtype=kv_cache_dtype)


# The read side, block copies and the other cache ops (small grids: each class a few seconds of an H200's batch).
from kvbench.ops import (concat_mla_q, convert_fp8, cp_gather, gather, indexer_gather, mla_grouped,  # noqa: E402
                         mla_rope, swap_blocks, upconvert_gather)

READ_TOKENS = [256, 4096, 65536]


class ConvertFp8(_PrimaryTime):
    """convert_fp8: a paged cache of 8 KV heads x 128 (block 16) between fp8 e4m3 codes and bf16, both ways."""

    params = [READ_TOKENS, ["dequantize", "quantize"], suite.implementations("convert-fp8")]
    param_names = ["num_tokens", "direction", "implementation"]
    version = "convertfp8-1"

    def case(self, num_tokens, direction, implementation):
        return convert_fp8.Case(num_tokens=num_tokens, direction=direction, device=DEVICE)


class Gather(_PrimaryTime):
    """gather_and_maybe_dequant_cache: DeepSeek's 576-wide latent rows of a mixed batch (shuffled blocks, block 64)
    into bf16, from a bf16 cache (auto) and from an fp8 cache (dequantized)."""

    params = [READ_TOKENS, ["auto", "fp8"], suite.implementations("gather")]
    param_names = ["num_tokens", "kv_cache_dtype", "implementation"]
    version = "gather-1"

    def case(self, num_tokens, kv_cache_dtype, implementation):
        return gather.Case(num_tokens=num_tokens, kv_cache_dtype=kv_cache_dtype, device=DEVICE)


class CpGather(_PrimaryTime):
    """cp_gather_cache: DeepSeek's 576-wide bf16 latent rows of a mixed batch (starts inside blocks) copied out."""

    params = [READ_TOKENS, suite.implementations("cp-gather")]
    param_names = ["num_tokens", "implementation"]
    version = "cpgather-1"

    def case(self, num_tokens, implementation):
        return cp_gather.Case(num_tokens=num_tokens, device=DEVICE)


class SwapBlocks(suite.Benchmark):
    """Block copies (vLLM's swap_blocks per layer, swap_blocks_batch for all layers at once, torch's copies): 2
    layers of 8 KV heads x 128, block 16, bf16, to pinned host memory (an offloading store), back (a load) and
    within the GPU. Eager calls (`time_no_graph`): issuing one copy per block is the host's work, and it counts."""

    params = [[256, 4096, 16384], ["gpu-cpu", "cpu-gpu", "gpu-gpu"], suite.implementations("swap-blocks")]
    param_names = ["num_tokens", "transfer", "implementation"]
    version = "swapblocks-1"
    mode = "no_graph"

    def time_no_graph(self, *params):
        self.sample()

    def case(self, num_tokens, transfer, implementation):
        return swap_blocks.Case(num_tokens=num_tokens, transfer=transfer, device=DEVICE)


class IndexerGather(_PrimaryTime):
    """cp_gather_indexer_k_quant_cache: DeepSeek-V3.2's indexer keys (128 fp8 codes and a 4-byte scale per token,
    block 64) of a mixed batch read back."""

    params = [READ_TOKENS, suite.implementations("indexer-gather")]
    param_names = ["num_tokens", "implementation"]
    version = "indexergather-1"

    def case(self, num_tokens, implementation):
        return indexer_gather.Case(num_tokens=num_tokens, device=DEVICE)


class UpconvertGather(_PrimaryTime):
    """cp_gather_and_upconvert_fp8_kv_cache: DeepSeek-V3.2's 656-byte fp8_ds_mla rows of a mixed batch read back as
    576 bf16 values."""

    params = [READ_TOKENS, suite.implementations("upconvert-gather")]
    param_names = ["num_tokens", "implementation"]
    version = "upconvertgather-1"

    def case(self, num_tokens, implementation):
        return upconvert_gather.Case(num_tokens=num_tokens, device=DEVICE)


class MLAGrouped(_PrimaryTime):
    """concat_and_cache_mla_grouped: DeepSeek's 512 + 64 rows of 4 layers written into their caches in one call
    (block 64, random slots), bf16 and fp8 caches."""

    params = [[16, 1024, 16384], ["auto", "fp8"], suite.implementations("mla-grouped")]
    param_names = ["num_tokens", "kv_cache_dtype", "implementation"]
    version = "mlagrouped-1"

    def case(self, num_tokens, kv_cache_dtype, implementation):
        return mla_grouped.Case(num_tokens=num_tokens, kv_cache_dtype=kv_cache_dtype, device=DEVICE)


class ConcatMLAQ(_PrimaryTime):
    """concat_mla_q: DeepSeek's decode queries (128 heads on one GPU, 512 + 64, bf16) assembled for FlashMLA from
    the transposed absorbed-projection output and the query's rope part."""

    params = [[16, 256, 1024], suite.implementations("concat-mla-q")]
    param_names = ["num_tokens", "implementation"]
    version = "concatmlaq-1"

    def case(self, num_tokens, implementation):
        return concat_mla_q.Case(num_tokens=num_tokens, device=DEVICE)


class MLARope(_PrimaryTime):
    """concat_and_cache_mla_rope_fused: DeepSeek's RoPE on 128 heads' q_pe and on k_pe fused with the MLA cache write
    (512 + 64, block 64, bf16, random slots and positions)."""

    params = [[16, 1024, 8192], suite.implementations("mla-rope")]
    param_names = ["num_tokens", "implementation"]
    version = "mlarope-1"

    def case(self, num_tokens, implementation):
        return mla_rope.Case(num_tokens=num_tokens, device=DEVICE)
