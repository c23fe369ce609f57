"""kvbench's Triton kernels never read past the end of their inputs.

A masked-off load reads nothing, an unmasked one past the last token reads whatever lies beyond the input: on a GPU
often harmless, at the end of an allocation an illegal address. The verifier cannot see it (nothing wrong is
stored) and neither can Triton's interpreter, which reads host memory through raw pointers. So here every input of
a small case is copied to the very end of its own mapping, followed by a page that cannot be read; the kernels run
through the interpreter in a child process, where a read past an input is a segmentation fault; then again with
every input at the very start of its mapping, after such pages (a read before it: a -1 index unmasked). Token counts
are no multiple of the kernels' tiles, so the last program's tile runs past the last token. A kernel of the test's
own that loads without its mask shows that such a read is caught.
"""

import ctypes
import json
import mmap
import os
import signal
import subprocess
import sys

import pytest

KV = dict(num_tokens=37, num_heads=3, head_size=80, num_blocks=8, block_size=16, dtype="bfloat16", slots="padded")
TOKENS_KERNEL = dict(TOKENS=32, SORTED=False)  # the paged kernel of several tokens a program, and in slot order
CASES = [
    *[("kv", dict(KV, layout=layout), None) for layout in ("nhd", "hnd", "paged", "nhd-split", "nhd-packed",
                                                           "hnd-packed")],
    ("kv", dict(KV, layout="nhd", kv_cache_dtype="fp8", fp8_scales="head"), None),
    ("kv", dict(KV, layout="paged", kv_cache_dtype="fp8"), TOKENS_KERNEL),
    ("kv", dict(KV, layout="paged", slots="prefill"), dict(TOKENS=32, SORTED=True)),
    ("kv", dict(KV, layout="paged", slots="random"), dict(TOKENS=8, SORTED=True, RUNS_KEPT=True, HEADS_FASTEST=True)),
    ("kv", dict(KV, layout="paged", slots="random"), dict(TOKENS=8, SORTED=False, BLOCK_H=2)),
    ("mla", dict(num_tokens=203, num_blocks=16, slots="padded"), None),
    ("mla", dict(num_tokens=203, num_blocks=16, slots="padded", kv_cache_dtype="fp8"), None),
    ("mla", dict(num_tokens=203, num_blocks=16, slots="padded", kv_cache_dtype="fp8_ds_mla"), None),
    ("indexer", dict(num_tokens=203, num_blocks=16, slots="padded"), None),
    ("token-head-quant", dict(num_tokens=203, num_blocks=16, slots="padded", kv_cache_dtype="int8"), None),
    ("convert-fp8", dict(num_tokens=208, direction="dequantize", num_heads=2, head_size=64), None),
    ("convert-fp8", dict(num_tokens=208, direction="quantize", dtype="float"), None),
    ("gather", dict(num_tokens=203, num_blocks=40), None),
    ("gather", dict(num_tokens=203, num_blocks=40, kv_cache_dtype="fp8"), None),
    ("cp-gather", dict(num_tokens=203, num_blocks=40), None),
    ("indexer-gather", dict(num_tokens=203, num_blocks=40), None),
    ("upconvert-gather", dict(num_tokens=203, num_blocks=40), None),
]
_KEEP = []  # the mappings behind the guarded tensors


GUARD_PAGES = 16  # unreadable pages beside each input: a row or head past the end lands in them too


def guarded(tensor, at_start: bool = False):
    """A copy of `tensor` whose last byte is the last byte before GUARD_PAGES pages no access is allowed to
    (PROT_NONE), or, `at_start`, whose first byte follows such pages."""
    import torch

    nbytes = tensor.numel() * tensor.element_size()
    pages = max(1, -(-nbytes // mmap.PAGESIZE))
    area = mmap.mmap(-1, (pages + 2 * GUARD_PAGES) * mmap.PAGESIZE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    for first in (0, GUARD_PAGES + pages):  # 0: PROT_NONE
        if libc.mprotect(base + first * mmap.PAGESIZE, GUARD_PAGES * mmap.PAGESIZE, 0) != 0:
            raise OSError(ctypes.get_errno(), "mprotect failed")
    _KEEP.append(area)
    start = GUARD_PAGES * mmap.PAGESIZE + (0 if at_start else pages * mmap.PAGESIZE - nbytes)
    raw = torch.frombuffer(area, dtype=torch.uint8, count=nbytes, offset=start)
    copy = raw.view(tensor.dtype).view(tensor.shape)
    copy.copy_(tensor)
    return copy


def guard_inputs(obj, inputs: set, at_start: bool, done: set) -> None:
    """Replace, in place, every tensor of dataclass `obj` (and of the dataclasses it holds) whose id is in `inputs`
    by its guarded copy; the copies' ids go to `done`."""
    import dataclasses

    import torch

    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if isinstance(value, torch.Tensor) and id(value) in inputs:
            copy = guarded(value, at_start)
            object.__setattr__(obj, field.name, copy)  # (frozen dataclasses too)
            done.add(id(copy))
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            guard_inputs(value, inputs, at_start, done)


def child() -> None:
    """Each case's inputs guarded, its Triton writer called once, inputs at the end then at the start of their
    mappings; prints each case before it runs."""
    from test_triton import variant_writer  # (this file runs as a script here: its folder is on the path)

    from kvbench import impls, ops
    from kvbench.runner import make_case

    for at_start in (False, True):
        for op, fields, config in CASES:
            where = "start" if at_start else "end"
            print(f"running {op} {json.dumps(fields)} {json.dumps(config)} (inputs at the {where})", flush=True)
            impl = impls.get("triton", op)
            w = ops.workload(make_case("triton", op=op, device="cpu", **fields), seed=3)
            done: set = set()
            guard_inputs(w, {id(t) for t in w.inputs()}, at_start, done)
            left = [name for name, t in zip(w.INPUT_NAMES, w.inputs()) if id(t) not in done]
            assert not left, f"{op}: inputs not guarded: {left}"
            (impl.bind(w) if config is None else variant_writer(w, config))()
    print("all cases ran", flush=True)


def control() -> None:
    """A kernel that loads a 64-element tile from a 37-element input without a mask: it must be caught."""
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def unmasked_copy(src, dst, n, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        tl.store(dst + i, tl.load(src + i), mask=i < n)

    src, dst = guarded(torch.arange(37, dtype=torch.float32)), torch.empty(64)
    unmasked_copy[(1,)](src, dst, 37, BLOCK=64)
    print("the unmasked read went unnoticed", flush=True)


def _run(what: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TRITON_INTERPRET="1")
    return subprocess.run([sys.executable, __file__, what], capture_output=True, text=True, env=env, timeout=600)


needs_interpreter = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                       reason="runs Triton's interpreter on CPU tensors (the GPU tests use the device)")


@needs_interpreter
def test_a_read_past_an_input_is_caught():
    run = _run("control")
    assert run.returncode in (-signal.SIGSEGV, -signal.SIGBUS), (run.returncode, run.stdout[-500:], run.stderr[-500:])


@needs_interpreter
def test_no_triton_kernel_reads_past_the_end_of_its_inputs():
    run = _run("child")
    last = [line for line in run.stdout.splitlines() if line.startswith("running")][-1:]
    assert run.returncode == 0, f"exit {run.returncode} in {last}: {run.stderr[-800:]}"
    assert run.stdout.rstrip().endswith("all cases ran")


if __name__ == "__main__":
    {"child": child, "control": control}[sys.argv[1]]()
