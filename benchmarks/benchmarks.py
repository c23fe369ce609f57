"""asv benchmarks of KV-cache writes. Thin: parameters here, all logic in kvbench.asv_suite.

Every combination is verified against the reference before it is timed; a wrong result is a failed benchmark.
Times are per call (kvbench.timing): `time_cudagraph` is device time per call inside a CUDA graph of K calls,
`time_no_graph` is eager per-call time including launch overhead (wall clock on CPU, where it is the primary mode
and no `time_cudagraph` exists). Unless a class says otherwise, the L2 is warm and slots random (vLLM's method).

The default grid runs in under 10 minutes on one H100 (each combination is a process of its own, ~1 s): the
primary time over every dtype, x-ideal for bfloat16, head shapes, slot patterns and L2 states. Eager (no_graph)
times on CUDA are host-bound and moved up to 3.3x between two A/A runs of the same code on an H100 (the GPU
times moved <= 1 %), so they are not tracked by default: KVBENCH_EAGER=1 adds KVCacheWriteEager. Parameters can be
narrowed with KVBENCH_NUM_TOKENS / KVBENCH_IMPLEMENTATIONS / KVBENCH_DTYPES (comma lists).
"""

from kvbench import asv_suite as suite

SAMPLING = dict(number=1, repeat=(10, 20, 10.0), rounds=1, warmup_time=0.0, timeout=600)
MAIN = [suite.NUM_TOKENS, suite.DTYPES, ["auto", "fp8"], suite.IMPLEMENTATIONS, [suite.NUM_BLOCKS]]
MAIN_NAMES = ["num_tokens", "dtype", "kv_cache_dtype", "implementation", "num_blocks"]
BF16 = [suite.NUM_TOKENS, ["auto", "fp8"], suite.IMPLEMENTATIONS, [suite.NUM_BLOCKS]]
BF16_NAMES = ["num_tokens", "kv_cache_dtype", "implementation", "num_blocks"]


def _time(mode):
    """A time_* method for `mode` whose samples are the sampler's per-call times."""

    def method(self, *params):
        suite.sample(mode)

    method.timer = suite.timer(mode)
    return method


def _primary():
    """{name: method} of this machine's primary time: cudagraph on CUDA, no_graph (wall clock) on CPU."""
    return {f"time_{suite.PRIMARY_MODE}": _time(suite.PRIMARY_MODE)}


class _Case:
    """Shared sampling settings and the GPU-state check after the first sample."""

    locals().update(SAMPLING)

    def teardown(self, *params):
        suite.check_state(type(self).__name__)


class KVCacheWrite(_Case):
    """Main grid: tokens 2..65536 x input dtype x cache dtype x implementation, vLLM's default shapes."""

    params, param_names = MAIN, MAIN_NAMES
    version = "kvcachewrite-2"
    locals().update(_primary())

    def setup(self, num_tokens, dtype, kv_cache_dtype, implementation, num_blocks):
        suite.setup_case(implementation, num_tokens, num_blocks, dtype=dtype, kv_cache_dtype=kv_cache_dtype)


class KVCacheWriteBF16(_Case):
    """bfloat16 input: primary time / ideal time at the measured copy bandwidth (1.0 = the hardware limit)."""

    params, param_names = BF16, BF16_NAMES
    version = "kvcachewritebf16-2"

    def setup(self, num_tokens, kv_cache_dtype, implementation, num_blocks):
        suite.setup_case(implementation, num_tokens, num_blocks, kv_cache_dtype=kv_cache_dtype)

    def track_x_ideal(self, *params):
        return suite.x_ideal()

    track_x_ideal.unit = "x ideal"


if suite.DEVICE == "cuda" and suite.EAGER:

    class KVCacheWriteEager(_Case):
        """bfloat16 input, eager calls: per-call time including launch overhead (opt-in: KVBENCH_EAGER=1)."""

        params, param_names = BF16, BF16_NAMES
        version = "kvcachewriteeager-1"
        time_no_graph = _time("no_graph")

        def setup(self, num_tokens, kv_cache_dtype, implementation, num_blocks):
            suite.setup_case(implementation, num_tokens, num_blocks, kv_cache_dtype=kv_cache_dtype)


class KVCacheWriteShapes(_Case):
    """vLLM's script's head configurations and block sizes, bf16 input, auto cache dtype."""

    params = [[16, 1024, 16384], ["32x128", "128x128", "64x256"], [16, 32], suite.IMPLEMENTATIONS,
              [suite.NUM_BLOCKS]]
    param_names = ["num_tokens", "heads_x_head_size", "block_size", "implementation", "num_blocks"]
    version = "kvcachewriteshapes-2"
    locals().update(_primary())

    def setup(self, num_tokens, heads_x_head_size, block_size, implementation, num_blocks):
        heads, head_size = (int(v) for v in heads_x_head_size.split("x"))
        suite.setup_case(implementation, num_tokens, num_blocks, num_heads=heads, head_size=head_size,
                         block_size=block_size)


class KVCacheWritePatterns(_Case):
    """Slot patterns (random, prefill, decode) and L2 state (warm: same inputs each call; cold: rotated inputs)."""

    params = [[16, 1024, 65536], ["random", "prefill", "decode"], ["warm", "cold"], suite.IMPLEMENTATIONS,
              [suite.NUM_BLOCKS]]
    param_names = ["num_tokens", "slots", "l2", "implementation", "num_blocks"]
    version = "kvcachewritepatterns-1"
    locals().update(_primary())

    def setup(self, num_tokens, slots, l2, implementation, num_blocks):
        suite.setup_case(implementation, num_tokens, num_blocks, slots=slots, l2=l2)
