#!/usr/bin/env bash
# One call on a GPU machine without network: GPU tests, sweeps (torch and triton; NHD auto and fp8, paged),
# the fidelity cross-check and a small timed asv run. Results and logs go to $OUT (default: artifacts/).
# Wheels for asv & co. come from ../shared/tools/device-wheels (folder .whl); torch and triton must be installed.
set -uo pipefail
OUT=${OUT:-artifacts}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
fi
export PYTHONPATH=$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 KVBENCH_CACHE_DIR=$PWD/.kvbench-cache
kvbench() { python3 -m kvbench.cli "$@"; }
step() { echo; echo "=== $* ($(date +%T))"; }
TOKENS="2 16 64 256 1024 4096 16384 65536"

step info;           kvbench info | tee "$OUT/info.txt"
step GPU tests;      python3 -m pytest -m gpu tests -q -p no:cacheprovider 2>&1 | tee "$OUT/gpu-tests.txt" | tail -4
for spec in "nhd auto" "nhd fp8" "paged auto"; do
  set -- $spec
  step sweep "$@";   kvbench sweep --implementation torch triton --layout "$1" --kv-cache-dtype "$2" \
                       --num-tokens $TOKENS --iters 30 --json "$OUT/sweep-$1-$2.json" 2>/dev/null
done
step no_graph;       kvbench sweep --implementation torch triton --mode no_graph --num-tokens 2 1024 65536 \
                       --iters 30 --json "$OUT/sweep-nhd-auto-no_graph.json" 2>/dev/null
step fidelity;       kvbench fidelity --implementation torch triton --num-tokens $(seq -f '%.0f' -s ' ' 1 16 | \
                       awk '{for(i=1;i<=NF;i++) printf "%d ", 2^$i}') --json "$OUT/fidelity.json" 2>/dev/null
if ! git rev-parse HEAD >/dev/null 2>&1; then  # the copy may come without history: asv needs a commit
  rm -rf .git && git init -q -b main && git add -A && git -c user.name=device -c user.email=device@localhost commit -qm device
fi
export ASV_PYTHONPATH=$PYTHONPATH  # asv drops PYTHONPATH in benchmark processes but passes this one on
step asv small run
python3 -m asv machine --yes >/dev/null
start=$(date +%s)
KVBENCH_IMPLEMENTATIONS=torch,triton python3 -m asv run --python=same --set-commit-hash "$(git rev-parse HEAD)" \
  --record-samples -b KVCacheWriteShapes 2>&1 | tail -n 25 | tee "$OUT/asv-small.txt"
echo "asv small run (KVCacheWriteShapes, torch+triton): $(( $(date +%s) - start )) s" | tee -a "$OUT/asv-small.txt"
step done
