#!/usr/bin/env bash
# The full default asv suite on a GPU machine, for suite speed, fidelity and A/A stability.
#   phase 1: `kvbench fidelity` (independent CUDA-event timings), then the whole suite under commit A;
#            results, the report and a tarball of .asv/results go to $OUT.
#   phase 2: (carry the tarball back as .asv-carry/results.tgz) the suite again under commit B, an empty commit
#            on top of A (same code), then `asv compare --factor 1.05` A B and the spreads of both runs.
set -uo pipefail
. scripts/device-env.sh
phase=${1:-1}
asv machine --yes --machine gpu-device >/dev/null
A=$(git rev-parse HEAD)
export KVBENCH_STATE_LOG=$PWD/$OUT/gpu-state.jsonl
if [ "$phase" = 1 ]; then
  step fp8 sweep; kvbench sweep --implementation triton --kv-cache-dtype fp8 --num-tokens 2 16 64 256 1024 4096 \
    16384 65536 --iters 30 --json "$OUT/sweep-nhd-fp8.json" 2>/dev/null | grep -E "^\| [0-9]"
  step fidelity; kvbench fidelity --implementation torch triton --json "$OUT/fidelity.json" 2>/dev/null | tail -n 34
  commit=$A
else
  tar xzf .asv-carry/results.tgz
  git -c user.name=device -c user.email=device@localhost commit -q --allow-empty -m "A/A: same code"
  commit=$(git rev-parse HEAD)
fi
step "asv run (full default suite) at ${commit:0:8}"
start=$(date +%s)
timeout "${SUITE_LIMIT_S:-480}" python3 -m asv run --python=same --machine gpu-device --set-commit-hash "$commit" \
  --record-samples > "$OUT/asv-run-$phase.txt" 2>&1
echo "full default suite: $(( $(date +%s) - start )) s; $(grep -c '^\[' "$OUT/asv-run-$phase.txt") progress lines"
result=$(ls .asv/results/gpu-device/${commit:0:8}*.json)
step report
fid=""; [ -f "$OUT/fidelity.json" ] && fid="--fidelity $OUT/fidelity.json"
kvbench asv-report "$result" $fid --max-spread 0.01 | tee "$OUT/report-$phase.txt" | head -n 60
if [ "$phase" = 2 ]; then
  step A/A compare; asv compare --machine gpu-device --factor 1.05 --split "$A" "$commit" | tee "$OUT/aa-compare.txt" | tail -n 40
fi
tar czf "$OUT/results.tgz" .asv/results
