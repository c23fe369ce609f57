#!/usr/bin/env bash
# One call on a GPU machine without network: GPU tests, sweeps (torch and triton; NHD auto and fp8, paged; slot
# patterns and L2 states) and a timed asv subset. Results and logs go to $OUT (default: artifacts/).
set -uo pipefail
. scripts/device-env.sh
TOKENS="2 16 64 256 1024 4096 16384 65536"

step info;           kvbench info | tee "$OUT/info.txt"
step GPU tests;      python3 -m pytest -m gpu tests -q -p no:cacheprovider 2>&1 | tee "$OUT/gpu-tests.txt" | tail -4
for spec in "nhd auto" "nhd fp8" "paged auto"; do
  set -- $spec
  step sweep "$@";   kvbench sweep --implementation torch triton --layout "$1" --kv-cache-dtype "$2" \
                       --num-tokens $TOKENS --iters 30 --json "$OUT/sweep-$1-$2.json" 2>/dev/null
done
step no_graph;       kvbench sweep --implementation torch triton --mode no_graph --num-tokens 2 1024 65536 \
                       --iters 30 --json "$OUT/sweep-nhd-auto-no_graph.json" 2>/dev/null | grep -v "^ "
for slots in random prefill decode; do for l2 in warm cold; do
  step "slots $slots, L2 $l2"
  kvbench sweep --implementation torch triton --slots $slots --l2 $l2 --num-tokens 16 1024 65536 --iters 30 \
    --json "$OUT/pattern-$slots-$l2.json" 2>/dev/null | grep -E "^\| [0-9]|^Bench"
done; done
step asv subset
asv machine --yes --machine gpu-device >/dev/null
start=$(date +%s)
KVBENCH_IMPLEMENTATIONS=torch,triton asv run --python=same --machine gpu-device --set-commit-hash \
  "$(git rev-parse HEAD)" --record-samples -b KVCacheWriteShapes 2>&1 | tail -n 8 | tee "$OUT/asv-subset.txt"
echo "asv KVCacheWriteShapes (torch+triton, 36 combinations): $(( $(date +%s) - start )) s" | tee -a "$OUT/asv-subset.txt"
step done
