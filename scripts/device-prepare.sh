#!/usr/bin/env bash
# Prepare, on a machine with network, what GPU calls without network carry (notes/device-plan.md):
#   .whl       asv and what it needs to run, check and publish with --python=same, and tabulate, as wheels for the
#              GPU machine's Python 3.12 (no virtualenv: --python=same never builds an environment; 0.7 MiB)
#   .kernels/  vLLM releases' KV-cache kernels, packed for sm_90 (kvbench vllm-kernels; 8-17 MB each)
# Then prints the carry groups that fit one call (64 MiB with the tracked tree and .whl).
# Usage: bash scripts/device-prepare.sh [VERSION...]   (default: the 15 minor releases 0.20.0 ... 0.34.0)
set -euo pipefail
versions=${*:-0.20.0 0.21.0 0.22.0 0.23.0 0.24.0 0.25.0 0.26.0 0.27.0 0.28.0 0.29.0 0.30.0 0.31.0 0.32.0 0.33.0 0.34.0}
mkdir -p .whl
for spec in asv==0.6.6 asv-runner==0.3.2 json5 pympler "importlib-metadata<9" platformdirs tabulate; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$spec"
done
kvbench vllm-kernels $versions --gpu sm_90 --xz --into .kernels > .kernels.log 2>&1 || true  # exit 4 on a CPU
grep -E "^vllm|error" .kernels.log | grep -v "^  " || true
python3 - $versions <<'PY'
import pathlib, subprocess, sys
mib = lambda p: sum(f.stat().st_size for f in pathlib.Path(p).rglob("*") if f.is_file()) / 2**20
tree = sum(pathlib.Path(f).stat().st_size for f in subprocess.run(["git", "ls-files", "-z"], capture_output=True,
           text=True).stdout.split("\0") if f and pathlib.Path(f).is_file()) / 2**20
room, groups = 64 - tree - mib(".whl") - 0.5, [[]]
for v in sys.argv[1:]:
    size = mib(f".kernels/{v}")
    if sum(mib(f".kernels/{g}") for g in groups[-1]) + size > room:
        groups.append([])
    groups[-1].append(v)
print(f"tree {tree:.1f} MiB, .whl {mib('.whl'):.1f} MiB; calls (each carrying .whl and these packs):")
for g in groups:
    print(f"  RELEASES=\"{' '.join(g)}\"  carry: .whl {' '.join('.kernels/' + v for v in g)}"
          f"  ({sum(mib(f'.kernels/{v}') for v in g):.1f} MiB)")
PY
