#!/usr/bin/env bash
# The asv suite on a GPU machine, for suite speed, fidelity and A/A stability. Results and logs go to $OUT.
#   full: the whole default suite under commit A, class by class (each class's results are saved when it ends),
#         timed, with the GPU state and per-process phase timings logged; then the spreads report and, when
#         time is left, `kvbench fidelity` to compare asv's cudagraph figures with independent CUDA-event timings.
#   aa:   A/A: the classes in $AA_BENCH (a regex) under commit A, then again under commit B (an empty commit on
#         top of A: same code), in the same call on the same GPU; `asv compare --factor 1.05` A B and spreads.
set -uo pipefail
. scripts/device-env.sh
phase=${1:-full}
asv machine --yes --machine gpu-device >/dev/null
A=$(git rev-parse HEAD)
export KVBENCH_STATE_LOG=$OUT/gpu-state.jsonl
run_suite() {  # commit label benchmark-regex...
  local commit=$1 label=$2; shift 2
  local start=$(date +%s)
  for bench in "$@"; do
    python3 -m asv run --python=same --machine gpu-device --set-commit-hash "$commit" --record-samples \
      -b "$bench" >> "$OUT/asv-run-$label.txt" 2>&1
    echo "  $bench: done at +$(( $(date +%s) - start )) s"
  done
  echo "suite $label: $(( $(date +%s) - start )) s"
}
report() {  # commit label [fidelity]
  local result; result=$(ls .asv/results/gpu-device/${1:0:8}*.json 2>/dev/null | head -1)
  [ -n "$result" ] || { echo "no results for $1"; return; }
  kvbench asv-report "$result" ${3:+--fidelity "$3"} | tee "$OUT/report-$2.txt" | head -n 45
}
if [ "$phase" = full ]; then
  step GPU tests; python3 -m pytest -m gpu tests -q -p no:cacheprovider 2>&1 | tee "$OUT/gpu-tests.txt" | tail -n 3
  step "full default suite at ${A:0:8}"
  run_suite "$A" full 'KVCacheWrite\.time' 'KVCacheWriteBF16' 'KVCacheWriteShapes' 'KVCacheWritePatterns'
  step fidelity; timeout 80 python3 -m kvbench.cli fidelity --implementation triton torch \
    --json "$OUT/fidelity.json" 2>/dev/null | tail -n 34
  step report; report "$A" full "$OUT/fidelity.json"
else
  step "A/A run 1 at ${A:0:8}"; run_suite "$A" aa1 "${AA_BENCH:-KVCacheWriteBF16}"
  git -c user.name=device -c user.email=device@localhost commit -q --allow-empty -m "A/A: same code"
  B=$(git rev-parse HEAD)
  step "A/A run 2 at ${B:0:8}"; run_suite "$B" aa2 "${AA_BENCH:-KVCacheWriteBF16}"
  step report; report "$A" aa1; report "$B" aa2
  step A/A compare; python3 -m asv compare --machine gpu-device --factor 1.05 --split "$A" "$B" \
    | tee "$OUT/aa-compare.txt" | tail -n 30
fi
tar czf "$OUT/results.tgz" .asv/results
