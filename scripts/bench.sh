#!/usr/bin/env bash
# The main job: set up, check every KVBENCH_* variable, run the asv suite for the current commit on this machine,
# and publish the site. A bad KVBENCH_* value stops it before anything runs (one line on stderr, exit 2; nothing
# published). Once asv has run, the site is always published: failed benchmarks are recorded (shown failed on the
# site) and summarised, and only then does the script exit. If asv stops before measuring anything (its
# discovery failed), the site is still published from the results there are, and the summary says that this run
# measured nothing (it counts only benchmarks started by this run: an earlier run of the same commit leaves its
# results in the same file, and they are kept). Extra arguments go to `asv run` (e.g. -b KVCacheWriteShapes).
# The exit status is the summary's verdict (`kvbench asv-summary`): non-zero for a new failure (1; a known vLLM
# defect, kvbench.defects, is still failed on the site but not counted), nothing measured (5), an asv that stopped
# with an error of its own (its status, other than 2, which only says that some benchmark failed), or a failed
# publish (1). Then: `.venv/bin/asv preview` to browse.
set -euo pipefail
started=$(date +%s)  # the summary counts the benchmarks asv started from now on
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/setup.sh
kvbench check-env  # every KVBENCH_* variable, before anything is run or written (exit 2 on a bad one)
commit=$(git rev-parse HEAD)
# The machine file, rewritten each run: its name carries the GPU model, its fields the driver, CUDA and versions.
machine=$(kvbench asv-machine ${KVBENCH_MACHINE:+--machine "$KVBENCH_MACHINE"} | awk '$1 == "machine:" {print $2}')
export KVBENCH_STATE_LOG=$PWD/.asv/run-log.jsonl  # one line per benchmark process: what it measured, skipped or failed
mkdir -p .asv && rm -f "$KVBENCH_STATE_LOG"
asv_status=0
bash scripts/asv-run.sh "$commit" --machine "$machine" "$@" || asv_status=$?
published=1
if asv publish; then
  # kvbench's page (latency against tokens, x ideal, failures with reasons), linked from asv's; a failure is one line
  kvbench site-landing .asv/html --state-log "$KVBENCH_STATE_LOG" --machine "$machine" || true
  # asv's page loads its JavaScript libraries from CDNs; local copies make the site work without internet too.
  kvbench site-vendor .asv/html || echo "note: the site needs internet access to load its libraries (no npm here)"
  echo "Site written to .asv/html (serve it with: .venv/bin/asv preview)"
else
  published=0
fi
shopt -s nullglob
results=(.asv/results/"$machine"/"${commit:0:8}"-*.json)
# Only this run's benchmarks are counted; nothing of this run in the files (asv stopped first): it says so, exit 5.
# Failures that are known vLLM defects are listed apart and do not count: exit 1 only for a new failure.
status=0
kvbench asv-summary "${results[@]}" --since "$started" --state-log "$KVBENCH_STATE_LOG" || status=$?
# asv's exit 2 means "a benchmark failed", which the summary has judged; any other non-zero status is asv's own error.
if [ "$status" = 0 ] && [ "$asv_status" != 0 ] && [ "$asv_status" != 2 ]; then
  echo "asv run exited $asv_status (an error of asv's own, not a failed benchmark); see its output above"
  status=$asv_status
fi
if [ "$status" = 0 ] && [ "$published" = 0 ]; then
  echo "asv publish failed: the site was not written"
  status=1
fi
exit "$status"
