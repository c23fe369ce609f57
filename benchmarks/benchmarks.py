"""asv benchmarks of vLLM's KV-cache writes: each class is params, a `case` that builds what they describe, and
`time_*` / `track_*` methods. Every case is verified against the reference before it is timed and again on the
timed path after its first sample; a wrong result is a failed benchmark, never a number.

The timed bodies are empty but for `self.sample()` because the clock is kvbench's (`suite.PerCallTimer`): asv reads
it around each body, and the body takes one sample (a CUDA graph of K calls between CUDA events, divided by K), so
each asv sample is one call's device time rather than the host time of launching a graph.

Times are per call: `time_cudagraph` on CUDA, `time_no_graph` (wall clock) on a CPU-only machine. Unless a class
says otherwise the L2 is warm and slots random (vLLM's method). KVBENCH_NUM_TOKENS / KVBENCH_IMPLEMENTATIONS /
KVBENCH_DTYPES (comma lists) narrow the grids; KVBENCH_EAGER=1 adds the host-bound eager times on CUDA.
"""

from kvbench.asv import suite
from kvbench.asv.suite import DEVICE, DTYPES, IMPLEMENTATIONS, NUM_BLOCKS, NUM_TOKENS
from kvbench.ops import kv


class _PrimaryTime(suite.Benchmark):
    """This machine's primary time: `time_cudagraph` on CUDA, `time_no_graph` (wall clock) on CPU."""

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
    """bfloat16 input: primary time / ideal time at the measured copy bandwidth (1.0 = the hardware limit)."""

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
