"""asv benchmarks of KV-cache writes. Thin: parameters here, all logic in kvbench.asv_suite.

Every combination is verified against the reference before it is timed; a wrong result is a failed benchmark.
Times are per call (see kvbench.timing): `time_cudagraph` is device time per call inside a CUDA graph of K calls
(warm L2, vLLM's inputs-reused method), `time_no_graph` is eager per-call time including launch overhead (wall
clock on CPU; CPU machines have no time_cudagraph). `track_x_ideal` is the primary time over bytes / measured copy bandwidth (1.0 = hardware limit).
"""

from kvbench import asv_suite as suite

SAMPLING = dict(number=1, repeat=(10, 20, 10.0), rounds=1, warmup_time=0.0, timeout=600)


def _time(mode):
    """A time_* method for `mode` whose samples are the sampler's per-call times."""

    def method(self, *params):
        suite.sample(mode)

    method.timer = suite.timer(mode)
    return method


class KVCacheWrite:
    """Main grid: tokens 2..65536 x input dtype x cache dtype x implementation, vLLM's default shapes."""

    params = [suite.NUM_TOKENS, ["half", "bfloat16", "float"], ["auto", "fp8"], suite.IMPLEMENTATIONS,
              [suite.NUM_BLOCKS]]
    param_names = ["num_tokens", "dtype", "kv_cache_dtype", "implementation", "num_blocks"]
    version = "kvcachewrite-1"
    locals().update(SAMPLING)

    def setup(self, num_tokens, dtype, kv_cache_dtype, implementation, num_blocks):
        self.prepared = suite.setup_case(implementation, num_tokens, num_blocks, dtype=dtype,
                                         kv_cache_dtype=kv_cache_dtype)

    if suite.DEVICE == "cuda":  # no CUDA graphs on a CPU-only machine: the benchmark does not exist there
        time_cudagraph = _time("cudagraph")
    time_no_graph = _time("no_graph")

    def track_x_ideal(self, *params):
        return suite.x_ideal(self.prepared)

    track_x_ideal.unit = "x ideal"


class KVCacheWriteShapes:
    """vLLM's script's head configurations and block sizes, bf16 input, auto cache dtype."""

    params = [[16, 1024, 16384], ["32x128", "128x128", "64x256"], [16, 32], suite.IMPLEMENTATIONS,
              [suite.NUM_BLOCKS]]
    param_names = ["num_tokens", "heads_x_head_size", "block_size", "implementation", "num_blocks"]
    version = "kvcachewriteshapes-1"
    locals().update(SAMPLING)

    def setup(self, num_tokens, heads_x_head_size, block_size, implementation, num_blocks):
        heads, head_size = (int(v) for v in heads_x_head_size.split("x"))
        self.prepared = suite.setup_case(implementation, num_tokens, num_blocks, num_heads=heads,
                                         head_size=head_size, block_size=block_size)

    if suite.DEVICE == "cuda":
        time_cudagraph = _time("cudagraph")
    time_no_graph = _time("no_graph")
