"""`kvbench vllm-kernels VERSION|COMMIT... [--into DIR]`: a vLLM release's KV-cache kernels without its stack
(kvbench.vllm_kernels): fetch the wheel, take out the cache-op library and the Triton write op, and say where they
are, what the library has code for and whether it loads here (tried in a fresh process).

Exit codes: 2 a bad version or commit string, 3 a wheel that cannot be fetched or read or a directory that cannot
be written, 4 kernels that cannot load here (the reason in one line), 0 all loaded.
"""

from __future__ import annotations

import pathlib
import sys

from kvbench import config
from kvbench.cli.flags import flag
from kvbench.errors import FileProblem, KvbenchError

DESCRIPTION = """Fetch vLLM wheels (a release with `pip download --no-deps`; a main-branch commit, by its full hash,
from vLLM's per-commit index; or --wheel FILE|URL), take out only the library that registers
torch.ops._C_cache_ops and vLLM's Triton write op, and write them with kvbench's stand-in `vllm` package to
DIR/<version or commit>/: put that directory first on PYTHONPATH and kvbench (or anything importing
vllm._custom_ops) uses that release's kernels in the current torch, with no vLLM dependency installed. Each
release is checked before it is loaded (torch version for a library outside libtorch's stable ABI, CUDA major,
GPU architecture) and then loaded in a fresh process. Exit 2: a bad version string; 3: a wheel that cannot be
fetched or read; 4: kernels that cannot load here."""


def add(sub) -> None:
    p = sub.add_parser("vllm-kernels", description=DESCRIPTION,
                       help="a vLLM release's KV-cache kernels without its stack, checked to load here")
    p.add_argument("releases", nargs="*", metavar="VERSION|COMMIT",
                   help="a vLLM version (0.34.0) or a main-branch commit (its full 40-character hash)")
    flag(p, "into", metavar="DIR", default=None, help="where the kernels go (default ~/.cache/kvbench/vllm-kernels)")
    flag(p, "index", metavar="URL", default=None,
         help="for versions: a PEP 503 index to take them from instead of pip's (PyPI); for commits: the base "
              "of the per-commit indexes (default $KVBENCH_VLLM_WHEELS, else https://wheels.vllm.ai)")
    flag(p, "variant", default="", help="for commits: a variant subdirectory of the commit's index (cu130, ...)")
    flag(p, "wheel", metavar="FILE|URL", action="append", default=[], help="a vLLM wheel given directly (repeatable)")
    flag(p, "cache", metavar="DIR", default=None, help="where wheels are kept (default ~/.cache/kvbench/vllm-wheels)")
    flag(p, "gpu", metavar="sm_XY", default=None, type=_arch,
         help="keep only this GPU architecture's code in the library (e.g. sm_90 for an H100/H200)")
    flag(p, "xz", action="store_true",
         help="xz-compress the library (unpacked beside itself when first loaded): with --gpu, a release's tree to "
              "carry to a machine without network is ~15 MB instead of ~60")
    flag(p, "check-only", action="store_true",
         help="only read the wheel and check whether its library can load here: nothing is written or loaded")
    p.set_defaults(run=cmd_vllm_kernels)


def _arch(text: str) -> int:
    """`sm_90` (or 90) as 90; a one-line argparse error otherwise."""
    import argparse

    digits = text.lower().removeprefix("sm_")
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a GPU architecture; give it like sm_90")
    return int(digits)


def _fetch(kind: str, name: str, args, cache: pathlib.Path) -> pathlib.Path:
    from kvbench.vllm_kernels import fetch

    if kind == "version":
        return fetch.release(name, cache, args.index)
    if kind == "commit":
        return fetch.commit(name, cache, args.index, args.variant)
    return fetch.given(name, cache)


def _report(kernels, where: pathlib.Path | None, outcome: dict) -> None:
    from kvbench.vllm_kernels.binary import GpuCode

    code = GpuCode(tuple(kernels.cubins), tuple(kernels.ptx))
    abi = "stable ABI" if kernels.stable_abi else f"built for torch {kernels.torch_pin or '(not pinned)'}"
    cuda = f"CUDA {kernels.cuda}" if kernels.cuda else "no CUDA"
    title = f"vllm {kernels.version}" + (f" (commit {kernels.commit})" if kernels.commit else "")
    print(f"{title}: {where if where else 'not extracted (--check-only)'}")
    print(f"  wheel       {kernels.wheel}")
    packed = f" (packed: {kernels.packed})" if kernels.packed else ""
    print(f"  library     vllm/{kernels.library}: {abi}, {cuda}, GPU code {code.describe() if code else 'none'}"
          f"{packed}")
    print(f"  triton op   {kernels.triton or 'none in this wheel'}")
    if outcome.get("checked_only") and outcome["loads"]:
        print("  loads here  nothing found against it (checked, not loaded: --check-only)")
    elif outcome["loads"]:
        ops = ", ".join(outcome.get("ops", [])) or "none of kvbench's write ops"
        print(f"  loads here  yes: torch.ops._C_cache_ops has {ops}; vllm version {outcome.get('version')}")
        if outcome.get("triton_error"):
            print(f"  triton op   does not import here: {outcome['triton_error']}")
        if where:
            print(f"  use it      PYTHONPATH={where}")
    else:
        print(f"  loads here  no: {outcome['reason']}")
        if where:
            print(f"  elsewhere   PYTHONPATH={where} (copy the directory to a machine where it loads)")


def _one(kind: str, name: str, args, cache: pathlib.Path, into: pathlib.Path) -> bool:
    """Fetch, extract (unless --check-only), check and report one release: whether it loads here."""
    from kvbench.vllm_kernels import check, fetch, load, wheel

    path = _fetch(kind, name, args, cache)
    commit = name if kind == "commit" else None
    if args.check_only:
        kernels, where = wheel.inspect(path, commit), None
        reason = check.why_not(kernels)
        outcome = {"loads": not reason, "reason": reason, "checked_only": True}
    else:
        where = into / (commit or fetch.wheel_version(path) or wheel.inspect(path).version)
        kernels = wheel.extract(path, where, commit, arch=args.gpu, compress=args.xz)
        outcome = load.probe(where)
    _report(kernels, where, outcome)
    return outcome["loads"]


def cmd_vllm_kernels(args) -> int:
    from kvbench.vllm_kernels import fetch

    if not args.releases and not args.wheel:
        raise KvbenchError("give a vLLM VERSION, a COMMIT (full hash) or --wheel FILE")
    todo = [fetch.parse(text) for text in args.releases] + [("wheel", w) for w in args.wheel]
    cache = pathlib.Path(args.cache) if args.cache else config.cache_dir() / "vllm-wheels"
    into = pathlib.Path(args.into) if args.into else config.cache_dir() / "vllm-kernels"
    if into.exists() and not into.is_dir():
        raise FileProblem(f"--into {str(into)!r} is not a directory")
    problems = unusable = 0
    for kind, name in todo:
        try:
            unusable += not _one(kind, name, args, cache, into)
        except FileProblem as exc:
            print(f"kvbench: error: {exc}", file=sys.stderr, flush=True)
            problems += 1
        sys.stdout.flush()
    return 3 if problems else 4 if unusable else 0
