#!/usr/bin/env bash
# The asv suite on a GPU machine, for suite speed, fidelity and A/A stability. Results and logs go to $OUT.
# Run the phases as consecutive calls on one warm machine (results of earlier phases stay in .asv/results):
#   full:   GPU tests; the whole default suite (one `asv run`, no -b) under commit A, timed, with the GPU state and
#           per-process step timings logged; `kvbench fidelity` (a fresh
#           process per case, as asv) for torch and triton at every default token count; the spreads report.
#   aa:     the whole suite again under commit B (an empty commit on top of A: same code), then
#           `asv compare --factor 1.05` A B and B's spreads: the A/A check. On a fresh machine, carry A's
#           results as artifacts/results-A.json.
#   suite:  the whole default suite only, as in full.
#   aa-quick: GPU tests, then an A/A of KVCacheWrite/KVCacheWriteBF16 at 2-256 tokens (both runs in one call).
#   fidelity: KVCacheWrite's bfloat16 cases with KVBENCH_FIDELITY=1 (each benchmark process also times its own graph
#           independently, kvbench.fidelity), then asv's figures against those: the same process, the same graph.
#   before: the whole suite of an older kvbench (artifacts/before.tar, from `git archive`) on the same GPU, for a
#           before/after of the suite's wall time.
set -uo pipefail
. scripts/device-env.sh
phase=${1:-full}
asv machine --yes --machine gpu-device >/dev/null
A=$(git rev-parse HEAD)
run_suite() {  # commit label: the whole default suite, one `asv run` with no -b, timed
  local commit=$1 label=$2 start=$(date +%s)
  export KVBENCH_STATE_LOG=$OUT/gpu-state-$label.jsonl
  python3 -m asv run --python=same --machine gpu-device --set-commit-hash "$commit" --record-samples \
    > "$OUT/asv-run-$label.txt" 2>&1
  echo "suite $label: $(( $(date +%s) - start )) s, $(grep -c . "$KVBENCH_STATE_LOG") benchmark processes logged"
}
result_of() { ls .asv/results/gpu-device/${1:0:8}*.json 2>/dev/null | head -1; }
report() {  # commit label [fidelity]
  local result; result=$(result_of "$1")
  [ -n "$result" ] || { echo "no results for $1"; return; }
  cp "$result" "$OUT/results-$2.json"
  kvbench asv-report "$result" ${3:+--fidelity "$3"} | tee "$OUT/report-$2.txt" | head -n 60
}
same_code_commit() {  # an empty commit on top of A: the "B" of an A/A
  git -c user.name=device -c user.email=device@localhost commit -q --allow-empty -m "A/A: same code"
  git rev-parse HEAD
}
aa_compare() {  # B file: asv compare --factor 1.05 A B into file, and how many benchmarks it flags
  python3 -m asv compare --machine gpu-device --factor 1.05 --split "$A" "$1" > "$2"
  grep -cE '^\| *[-+x!] *\|' "$2" | sed 's/^/benchmarks flagged (+, -, x, !): /'
}
case $phase in
full)
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
  step GPU tests; python3 -m pytest -m gpu tests -q -p no:cacheprovider 2>&1 | tee "$OUT/gpu-tests.txt" | tail -n 3
  step "full default suite at ${A:0:8}"; run_suite "$A" A
  step fidelity; timeout 150 python3 -m kvbench.cli fidelity --implementation torch triton \
    --json "$OUT/fidelity.json" 2>/dev/null
  step report; report "$A" A "$OUT/fidelity.json" ;;
suite)  # the whole default suite only (wall time, spreads, calls per sample)
  step "full default suite at ${A:0:8}"; run_suite "$A" A
  step report; report "$A" A | head -n 3 ;;
aa)
  if [ -z "$(result_of "$A")" ] && [ -f artifacts/results-A.json ]; then  # a fresh machine: A's results carried in
    mkdir -p .asv/results/gpu-device && cp artifacts/results-A.json ".asv/results/gpu-device/${A:0:8}-restored.json"
  fi
  B=$(same_code_commit)
  step "full default suite again at ${B:0:8} (A/A)"; run_suite "$B" B
  step report; report "$B" B
  step A/A compare; aa_compare "$B" "$OUT/aa-compare.txt"
  tail -n 12 "$OUT/aa-compare.txt" ;;
aa-quick)  # GPU tests, then an A/A of the short calls only (where processes differ most), both runs in one call
  step GPU tests; python3 -m pytest -m gpu tests -q -p no:cacheprovider 2>&1 | tee "$OUT/gpu-tests.txt" | tail -n 3
  export KVBENCH_NUM_TOKENS=2,4,8,16,32,64,128,256
  quick() { python3 -m asv run --python=same --machine gpu-device --set-commit-hash "$1" --record-samples \
    -b 'KVCacheWrite\.time|KVCacheWriteBF16' > "$OUT/asv-run-$2.txt" 2>&1; }
  step "short calls at ${A:0:8}"; KVBENCH_STATE_LOG=$OUT/gpu-state-quick-A.jsonl quick "$A" quick-A
  B=$(same_code_commit)
  step "short calls again at ${B:0:8}"; KVBENCH_STATE_LOG=$OUT/gpu-state-quick-B.jsonl quick "$B" quick-B
  report "$A" quick-A >/dev/null; report "$B" quick-B | head -n 3
  aa_compare "$B" "$OUT/aa-quick-compare.txt" ;;
fidelity)
  export KVBENCH_STATE_LOG=$OUT/gpu-state-fidelity.jsonl KVBENCH_FIDELITY=1 KVBENCH_DTYPES=bfloat16
  step "asv KVCacheWrite, bfloat16, each process timing its own graph independently too"
  python3 -m asv run --python=same --machine gpu-device --set-commit-hash "$A" --record-samples \
    -b 'KVCacheWrite\.time' > "$OUT/asv-run-fidelity.txt" 2>&1
  result=$(result_of "$A"); cp "$result" "$OUT/results-fidelity.json"
  kvbench asv-report "$result" --state-log "$KVBENCH_STATE_LOG" | tee "$OUT/report-fidelity.txt" ;;
before)
  rm -rf /tmp/before && mkdir -p /tmp/before && tar -xf artifacts/before.tar -C /tmp/before && cp -r .whl /tmp/before/
  cd /tmp/before && . scripts/device-env.sh && asv machine --yes --machine gpu-device >/dev/null
  step "full default suite of the older kvbench at $(git rev-parse --short HEAD)"
  run_suite "$(git rev-parse HEAD)" before ;;
esac
