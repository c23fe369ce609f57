"""vLLM's history from per-commit wheels (asv.vllm-commits.conf.json + src/kvbench/asv/vllm_wheels.py), offline.

A throwaway git repository stands in for vLLM and a local HTTP server for wheels.vllm.ai, with its layout
(<commit>/index.html, <commit>/vllm/index.html linking ../<wheel>, variant subdirectories). Its wheels have the
layout of vLLM's kernels: a library registering torch.ops._C_cache_ops (a CPU one compiled by test_vllm_kernels)
and a Triton write op module importing what vLLM's imports, whose writer is vectorised before SLOW_FROM and a
per-token Python loop from it on; their METADATA requires a package that exists nowhere (vLLM's stack, which must
not be installed). `asv run` and `asv find` run with the configuration vllm_wheels.py writes (the real
download/install commands: the kernels are extracted, not installed) and a one-benchmark suite timing that op on
CPU tensors; `asv find` must name the first slow commit.

asv's own requirements (wheel, build, asv_runner) come from this interpreter's site-packages through a
sitecustomize on PYTHONPATH that *appends* them (site.addsitedir); pip's configuration is replaced by an index that
does not answer, so nothing is downloaded. The install step on its own (test_install_takes_only_the_kernels) runs
in a bare virtualenv without that hook: torch comes from the host's site-packages the configuration names.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import importlib.util
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import threading
import urllib.parse
import zipfile

import pytest
from test_vllm_kernels import FAKE_LIBRARY, OTHER_TORCH, cpu_library  # noqa: F401,F811 - cpu_library: a fixture

ROOT = pathlib.Path(__file__).resolve().parents[1]
HELPER = ROOT / "src" / "kvbench" / "asv" / "vllm_wheels.py"
SLOW_FROM = 3  # commits 0..4; 3 and 4 carry the slow op


def _load_helper():
    spec = importlib.util.spec_from_file_location("kvbench_vllm_wheels_under_test", HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


vw = _load_helper()


def git(repo, *args):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


TRITON_IMPORTS = '''
from vllm.model_executor.layers.quantization.utils.quant_utils import FP8_DTYPE, get_fp8_min_max
from vllm.platforms import current_platform
from vllm.triton_utils import tl, triton
from vllm.v1.kv_cache_interface import KVQuantMode, is_quantized_kv_cache
'''

OPS_FAST = TRITON_IMPORTS + '''

def triton_reshape_and_cache_flash(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale,
                                   v_scale):
    """Write key/value rows to their slots of [num_blocks, block_size, heads, head_size] caches."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    key_cache.view(-1, *key_cache.shape[2:])[slots] = key[keep].to(key_cache.dtype)
    value_cache.view(-1, *value_cache.shape[2:])[slots] = value[keep].to(value_cache.dtype)
'''

OPS_SLOW = TRITON_IMPORTS + '''

def triton_reshape_and_cache_flash(key, value, key_cache, value_cache, slot_mapping, kv_cache_dtype, k_scale,
                                   v_scale):
    """Write key/value rows to their slots of [num_blocks, block_size, heads, head_size] caches, token by token."""
    block_size = key_cache.shape[1]
    for i, slot in enumerate(slot_mapping.tolist()):
        if slot < 0:
            continue
        block, offset = divmod(slot, block_size)
        key_cache[block, offset].copy_(key[i])
        value_cache[block, offset].copy_(value[i])
'''


def build_wheel(out_dir: pathlib.Path, version: str, commit: str, slow: bool, filename: str | None = None,
                library: bytes = FAKE_LIBRARY, requires: str = "torch",
                library_name: str = "_C_stable_libtorch.abi3.so"):
    """A wheel of a `vllm` whose version names `commit` (like vLLM's nightlies), with vLLM's kernel files."""
    files = {
        "vllm/__init__.py": f'__version__ = "{version}"\n__commit__ = "{commit}"\n',  # vLLM's own: not taken
        f"vllm/{library_name}": library,
        "vllm/v1/attention/ops/triton_reshape_and_cache_flash.py": OPS_SLOW if slow else OPS_FAST,
    }
    info = f"vllm-{version}.dist-info"
    files[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\nRequires-Dist: torch\n"
                                 f"Requires-Dist: {requires}\n")
    files[f"{info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: kvbench-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    files = {name: data if isinstance(data, bytes) else data.encode() for name, data in files.items()}
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    files[f"{info}/RECORD"] = ("\n".join(record + [f"{info}/RECORD,,"]) + "\n").encode()
    path = out_dir / (filename or f"vllm-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as whl:
        for name, text in files.items():
            whl.writestr(name, text)
    return path


INDEX_HTML = ('<!DOCTYPE html>\n<html>\n  <meta name="pypi:repository-version" content="1.0">\n  <body>\n{}\n'
              '  </body>\n</html>\n')


def publish(site: pathlib.Path, commit: str, slow: bool, number: int, variants=("cpu",), library=FAKE_LIBRARY):
    """<site>/<commit>/ as wheels.vllm.ai lays it out: the wheels, a project list, a package page per variant."""
    base = site / commit
    base.mkdir(parents=True)
    short = commit[:9]
    default = build_wheel(base, f"0.1.0.dev{number}+g{short}", commit, slow, library=library)
    pages = {base: [default]}
    for variant in variants:
        pages[base / variant] = [build_wheel(base, f"0.1.0.dev{number}+g{short}.{variant}", commit, slow,
                                             library=library)]
    for index_dir, wheels in pages.items():
        (index_dir / "vllm").mkdir(parents=True)
        up = os.path.relpath(base, index_dir / "vllm")
        links = "\n".join(f'    <a href="{urllib.parse.quote(f"{up}/{w.name}", safe=":%/")}">{w.name}</a><br/>'
                          for w in wheels)
        (index_dir / "vllm" / "index.html").write_text(INDEX_HTML.format(links))
        subdirs = ["vllm"] + (list(variants) if index_dir == base else [])
        (index_dir / "index.html").write_text(INDEX_HTML.format(
            "\n".join(f'    <a href="{d}/">{d}/</a><br/>' for d in sorted(subdirs))))


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # quiet; requests are recorded instead
        pass

    def do_GET(self):
        self.server.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def wheel_server(tmp_path):
    """A static HTTP server over tmp_path/site (like wheels.vllm.ai: /<dir> redirects to /<dir>/, which serves
    index.html): (site directory, base URL, list of requested paths)."""
    site = tmp_path / "site"
    site.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(site)))
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}", server.requests
    server.shutdown()
    server.server_close()


def _pip_env(tmp_path):
    """This process's environment with pip confined to the test: no configuration files, an index that is an
    empty directory (a lookup there fails at once instead of reaching the network), no proxies."""
    empty = tmp_path / "empty-index"
    empty.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "VIRTUALENV_")) and k.lower() not in ("http_proxy", "https_proxy",
                                                                                 "all_proxy", "no_proxy")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL=empty.as_uri() + "/", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1", PIP_RETRIES="0", PIP_NO_CACHE_DIR="1", NO_PROXY="127.0.0.1,localhost")
    return env


# --- the helper on its own ------------------------------------------------------------------------------------------


def test_index_urls(monkeypatch):
    commit = "72d9c316d3f6ede485146fe5aabd4e61dbc59069"
    monkeypatch.delenv(vw.INDEX_ENV, raising=False)
    assert vw.index_url(commit) == f"https://wheels.vllm.ai/{commit}/"
    assert vw.index_url(commit, variant="cu130") == f"https://wheels.vllm.ai/{commit}/cu130/"
    assert vw.legacy_url(commit) == f"https://wheels.vllm.ai/{commit}/vllm-1.0.0.dev-cp38-abi3-manylinux1_x86_64.whl"
    monkeypatch.setenv(vw.INDEX_ENV, "http://mirror.local/vllm/")
    assert vw.index_url(commit) == f"http://mirror.local/vllm/{commit}/"
    assert vw.index_url(commit, "http://other") == f"http://other/{commit}/"
    with pytest.raises(vw.WheelError, match="full 40-character"):
        vw.index_url(commit[:12])
    vw.check_version("0.11.1rc6.dev16+g72d9c316d.cu129", commit)
    vw.check_version("0.32.0", commit)
    with pytest.raises(vw.WheelError, match="names commit 933cdea44"):
        vw.check_version("0.11.1rc6.dev16+g933cdea44", commit)


def test_config_from_the_template(tmp_path, monkeypatch):
    """Absolute paths under the checkout's .asv/vllm-commits, the helper's path and the defaults filled in."""
    from asv.config import Config

    monkeypatch.delenv(vw.INDEX_ENV, raising=False)
    root = tmp_path / "kvbench"
    root.mkdir()
    (root / vw.TEMPLATE).write_text((ROOT / vw.TEMPLATE).read_text())
    path = vw.write_config(tmp_path / "vllm", root=root)
    assert path == root / ".asv" / "vllm-commits" / "asv.conf.json"
    conf = Config.load(str(path))
    assert conf.repo == str(tmp_path / "vllm") and conf.project == "vllm"
    assert conf.env_dir == str(root / ".asv" / "vllm-commits" / "env")
    assert conf.benchmark_dir == str(root / "benchmarks")
    helper = f"python {root}/src/kvbench/asv/vllm_wheels.py"
    assert conf.build_command == [f"in-dir={{env_dir}} {helper} download --commit {{commit}} "
                                  "--dest {build_cache_dir} --index=https://wheels.vllm.ai --variant="]
    assert conf.install_command == [f"in-dir={{env_dir}} {helper} install --wheel {{wheel_file}} --kvbench {root} "
                                    f"--extras=gpu --host-site={os.pathsep.join(_site_dirs())}"]
    assert _site_dirs() and any((pathlib.Path(d) / "torch").is_dir() for d in _site_dirs())
    with pytest.raises(vw.WheelError, match="not found"):
        vw.write_config(tmp_path / "vllm", root=tmp_path)


def test_download_picks_the_commits_wheel(tmp_path, wheel_server, monkeypatch):
    """The default variant and a variant subdirectory, over HTTP; pip's own configuration cannot add a source."""
    site, url, requests = wheel_server
    commits = [hashlib.sha1(str(i).encode()).hexdigest() for i in range(2)]
    for i, commit in enumerate(commits):
        publish(site, commit, slow=bool(i), number=i)
    for key, value in _pip_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    # an extra index from the environment holding a newer vllm: must not be used (vLLM's docs' pip caveat)
    decoy = tmp_path / "decoy"
    (decoy / "vllm").mkdir(parents=True)
    newer = build_wheel(decoy / "vllm", "9.9.9", commits[0], slow=False)
    (decoy / "vllm" / "index.html").write_text(INDEX_HTML.format(f'<a href="{newer.name}">{newer.name}</a>'))
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", decoy.as_uri() + "/")
    got = vw.download(commits[1], tmp_path / "cache", url)
    assert got.name == f"vllm-0.1.0.dev1+g{commits[1][:9]}-py3-none-any.whl"
    assert [p.name for p in (tmp_path / "cache").glob("*.whl")] == [got.name]
    got = vw.download(commits[0], tmp_path / "cache", url, variant="cpu")
    assert got.name == f"vllm-0.1.0.dev0+g{commits[0][:9]}.cpu-py3-none-any.whl"
    assert [p.name for p in (tmp_path / "cache").glob("*.whl")] == [got.name]  # the previous one is gone
    with pytest.raises(vw.WheelError, match="no vllm wheel for this platform"):
        vw.download(commits[0], tmp_path / "cache", url, variant="cu130")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the pre-index wheels are x86_64 only")
def test_download_falls_back_to_the_pre_index_name(tmp_path, wheel_server, monkeypatch):
    """Commits from before the per-commit index: the fixed file name, renamed after the version in the wheel."""
    site, url, _ = wheel_server
    commit = hashlib.sha1(b"old").hexdigest()
    (site / commit).mkdir()
    build_wheel(site / commit, f"0.6.4.dev7+g{commit[:7]}", commit, slow=False, filename=vw.LEGACY_WHEEL)
    for key, value in _pip_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    got = vw.download(commit, tmp_path / "cache", url)
    assert got.name == f"vllm-0.6.4.dev7+g{commit[:7]}-cp38-abi3-manylinux1_x86_64.whl"


# --- asv run / asv find against the stand-ins -----------------------------------------------------------------------

BENCHMARK = '''
import importlib.metadata
import os

import torch

from vllm import _custom_ops as ops
from vllm.v1.attention.ops.triton_reshape_and_cache_flash import triton_reshape_and_cache_flash as write

torch.set_num_threads(1)
TOKENS, BLOCKS, BLOCK_SIZE, HEADS, HEAD_SIZE = 64, 16, 16, 2, 8


class Write:
    number = 20
    repeat = (3, 5, 5.0)
    rounds = 1
    warmup_time = 0.0

    def setup(self):
        # the kernels imported are those of the wheel of the commit asv is at (its version names the commit)
        version = importlib.metadata.version("vllm")
        assert version.split("+g")[1][:9] == os.environ["ASV_COMMIT"][:9], (version, os.environ.get("ASV_COMMIT"))
        g = torch.Generator().manual_seed(0)
        self.key = torch.randn(TOKENS, HEADS, HEAD_SIZE, generator=g)
        self.value = torch.randn(TOKENS, HEADS, HEAD_SIZE, generator=g)
        self.slots = torch.randperm(BLOCKS * BLOCK_SIZE, generator=g)[:TOKENS]
        self.scale = torch.ones(1)
        for op in (ops.reshape_and_cache_flash, write):  # the wheel's compiled library, then its Triton op
            self.key_cache = torch.zeros(BLOCKS, BLOCK_SIZE, HEADS, HEAD_SIZE)
            self.value_cache = torch.zeros(BLOCKS, BLOCK_SIZE, HEADS, HEAD_SIZE)
            op(self.key, self.value, self.key_cache, self.value_cache, self.slots, "auto", self.scale, self.scale)
            assert torch.equal(self.key_cache.view(-1, HEADS, HEAD_SIZE)[self.slots], self.key)
            assert torch.equal(self.value_cache.view(-1, HEADS, HEAD_SIZE)[self.slots], self.value)

    def time_write(self):
        write(self.key, self.value, self.key_cache, self.value_cache, self.slots, "auto", self.scale, self.scale)
'''


def _site_dirs():
    """This interpreter's site-packages directories (a venv's, then its base's where it sees them), in order."""
    return [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages") and os.path.isdir(p)]


def _wheel_stub(out: pathlib.Path) -> pathlib.Path:
    """asv's environment setup runs `pip install wheel pip>=8`; where this interpreter has no `wheel` for the
    environment to see, a metadata-only one answers it offline (asv builds nothing with this configuration)."""
    out.mkdir()
    info = "wheel-0.0.1.dist-info"
    with zipfile.ZipFile(out / "wheel-0.0.1-py3-none-any.whl", "w") as whl:
        whl.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: wheel\nVersion: 0.0.1\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", "")
    return out


@pytest.fixture
def fake_vllm(tmp_path, wheel_server, cpu_library):
    """A git repository of five commits and, on the wheel server, each commit's wheel: (repo, commits)."""
    site, _, _ = wheel_server
    repo = tmp_path / "vllm"
    (repo / "vllm").mkdir(parents=True)  # like vLLM's checkout: a vllm/ package directory at the top
    git(repo, "init", "-q", "-b", "main")
    commits = []
    for i in range(5):
        (repo / "vllm" / "__init__.py").write_text(f"# commit {i}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"commit {i}" + (" (slow write)" if i == SLOW_FROM else ""))
        commits.append(git(repo, "rev-parse", "HEAD"))
        publish(site, commits[-1], slow=i >= SLOW_FROM, number=i, library=cpu_library)
    return repo, commits


@pytest.mark.slow
def test_asv_run_and_find_install_each_commits_wheel(tmp_path, wheel_server, fake_vllm):
    site, url, requests = wheel_server
    repo, commits = fake_vllm
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "__init__.py").write_text("")
    (bench / "kvwrite.py").write_text(BENCHMARK)
    conf = subprocess.run([sys.executable, str(HELPER), "config", "--vllm-repo", str(repo), "--out-dir",
                           str(tmp_path / "asv"), "--index", url, "--extras=", "--benchmark-dir", str(bench)],
                          check=True, capture_output=True, text=True).stdout.strip()
    written = json.loads(pathlib.Path(conf).read_text())
    assert f"--index={url}" in written["build_command"][0] and "@" not in " ".join(written["install_command"])

    # what asv's environment sees of this interpreter's packages: appended, after its own
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import site\n" + "".join(f"site.addsitedir({d!r})\n" for d in _site_dirs()))
    links = _wheel_stub(tmp_path / "links")
    env = _pip_env(tmp_path)
    env.update(HOME=str(tmp_path / "home"), ASV_PYTHONPATH=str(hook), PIP_FIND_LINKS=str(links),
               VIRTUALENV_NO_PERIODIC_UPDATE="1", PATH=os.path.dirname(sys.executable) + os.pathsep + env["PATH"])
    asv = [sys.executable, "-m", "asv"]

    def run(*args):
        out = subprocess.run([*asv, *args, f"--config={conf}"], env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
        return out.stdout + out.stderr

    run("machine", "--yes", "--machine", "cpu-test")
    span = f"{commits[0]}..{commits[-1]}"  # commits 1..4
    run("run", "--machine", "cpu-test", "--show-stderr", span)
    times = {}
    for result in (tmp_path / "asv" / "results" / "cpu-test").glob("*-virtualenv-*.json"):
        data = json.loads(result.read_text())
        times[data["commit_hash"]] = data["results"]["kvwrite.Write.time_write"][0][0]
    assert set(times) == set(commits[1:]), times
    fast = max(times[c] for c in commits[1:SLOW_FROM])
    slow = min(times[c] for c in commits[SLOW_FROM:])
    assert slow > 3 * fast, times

    found = run("find", "--machine", "cpu-test", span, "kvwrite.Write.time_write")
    assert re.search(rf"Greatest regression found: {commits[SLOW_FROM][:8]}", found), found[-3000:]
    # each commit's wheel was downloaded once: asv find installed the cached ones (build_cache_size 4)
    fetched = [p for p in requests if p.endswith(".whl")]
    assert sorted(fetched) == sorted(set(fetched)) and len(fetched) == 4, fetched
    # the environment holds the last commit's kernels with kvbench's stand-ins (not the wheel's vllm package),
    # kvbench's .pth and the host's site-packages, and took torch from outside (nothing downloaded)
    (site_packages,) = (tmp_path / "asv" / "env").glob("*/lib/python*/site-packages")
    manifest = json.loads((site_packages / "vllm" / "_kvbench_kernels.json").read_text())
    assert manifest["library"] == "_C_stable_libtorch.abi3.so" and "+g" in manifest["version"]
    assert "__commit__" not in (site_packages / "vllm" / "__init__.py").read_text()
    assert not (site_packages / "torch").exists() and not (site_packages / "vllm-only-dependency").exists()
    assert (site_packages / vw.PTH).read_text().strip() == str(ROOT / "src")
    assert all(repr(d) in (site_packages / vw.HOST_PTH).read_text() for d in _site_dirs())


@pytest.mark.slow
def test_install_takes_only_the_kernels(tmp_path, cpu_library):
    """The install step in a bare virtualenv (no hook): the kernels are extracted, vLLM's requirements (here one
    that exists nowhere) are never asked for, torch is the host's, the kernels load; pip removes them; kernels
    that cannot load here fail the install with the check's one line."""
    env_dir = tmp_path / "env"
    pip_env = _pip_env(tmp_path)
    subprocess.run([sys.executable, "-m", "virtualenv", "-q", "--no-periodic-update", str(env_dir)], check=True,
                   env=pip_env, timeout=300)
    python = str(env_dir / "bin" / "python")
    commit = hashlib.sha1(b"install").hexdigest()
    good = build_wheel(tmp_path, f"0.1.0.dev1+g{commit[:9]}", commit, slow=False, library=cpu_library,
                       requires="vllm-only-dependency==1.0")
    host = os.pathsep.join(_site_dirs())

    def install(wheel):
        return subprocess.run([python, str(HELPER), "install", "--wheel", str(wheel), "--kvbench", str(ROOT),
                               "--extras=", f"--host-site={host}"], env=pip_env, capture_output=True, text=True,
                              timeout=600)

    got = install(good)
    assert got.returncode == 0, got.stdout[-3000:] + got.stderr[-3000:]
    assert got.stdout.strip().splitlines()[-1] == (f"installed vllm 0.1.0.dev1+g{commit[:9]}'s kernels "
                                                   f"(_C_stable_libtorch.abi3.so: reshape_and_cache_flash)")
    use = ("import importlib.metadata, torch, vllm._custom_ops as ops\n"
           "from vllm.v1.attention.ops.triton_reshape_and_cache_flash import triton_reshape_and_cache_flash\n"
           "print(importlib.metadata.version('vllm'), torch.__file__, ops.reshape_and_cache_flash)\n")
    used = subprocess.run([python, "-c", use], env=pip_env, capture_output=True, text=True, timeout=300)
    assert used.returncode == 0 and used.stdout.startswith(f"0.1.0.dev1+g{commit[:9]} "), used.stderr[-3000:]
    assert not used.stdout.split()[1].startswith(str(env_dir))  # the host's torch
    removed = subprocess.run([python, "-m", "pip", "uninstall", "-y", "vllm"], env=pip_env, capture_output=True,
                             text=True, timeout=300)
    (site_packages,) = env_dir.glob("lib/python*/site-packages")
    assert removed.returncode == 0 and not (site_packages / "vllm").exists(), removed.stdout + removed.stderr
    assert not list(site_packages.glob("vllm-*.dist-info"))
    # the library as vLLM <= 0.22 shipped it, for another torch
    other = build_wheel(tmp_path, "0.1.0.dev2", commit, slow=False, library=cpu_library,
                        library_name="_C.abi3.so", requires=f"torch=={OTHER_TORCH}")
    got = install(other)
    assert got.returncode == 1 and got.stderr.strip().splitlines()[-1].startswith(
        "vllm_wheels: vLLM 0.1.0.dev2's _C.abi3.so cannot load here: it is built for torch " + OTHER_TORCH), got.stderr
