"""asv benchmarks of vLLM's KV-cache writes: each class is params, a `case` that builds what they describe, and
`time_*` / `track_*` methods. Every case is verified against the reference before it is timed and again on the
timed path after its first sample; a wrong result is a failed benchmark, never a number.

The timed bodies are empty but for `self.sample()` because the clock is kvbench's (`suite.PerCallTimer`): asv reads
it around each body, and the body takes one sample (a CUDA graph of K calls between CUDA events, divided by K), so
each asv sample is one call's device time rather than the host time of launching a graph.

Times are per call: `time_cudagraph` on CUDA, `time_no_graph` (CPU time) on a CPU-only machine. Unless a class
says otherwise the L2 is warm and slots random (vLLM's method). KVBENCH_NUM_TOKENS / KVBENCH_IMPLEMENTATIONS /
KVBENCH_DTYPES (comma lists) narrow the grids; KVBENCH_EAGER=1 adds the host-bound eager times on CUDA.
"""

from kvbench.asv import suite
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


class MLAWrite(_PrimaryTime):
    """concat_and_cache_mla, DeepSeek's 512 + 64, block 64, bf16 input: auto, fp8 and fp8_ds_mla rows; warm L2
    (vLLM's method) and cold (inputs rotated past 4x the L2)."""

    params = [FAMILY_TOKENS, ["auto", "fp8", "fp8_ds_mla"], ["warm", "cold"], suite.implementations("mla")]
    param_names = ["num_tokens", "kv_cache_dtype", "l2", "implementation"]
    version = "mlawrite-1"

    def case(self, num_tokens, kv_cache_dtype, l2, implementation):
        return mla.Case(num_tokens=num_tokens, kv_cache_dtype=kv_cache_dtype, l2=l2, device=DEVICE)


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
