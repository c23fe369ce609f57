#!/usr/bin/env bash
# kvbench on a GPU machine without network (the device tool): carry .whl (asv's wheels) and vLLM's kernel packs
# (.kernels/VERSION; scripts/device-prepare.sh makes both; notes/device-plan.md says which calls), then
# `bash scripts/device.sh PHASE...`. Outputs go to $OUT.
#   tests    every GPU test (vLLM 0.33's real kernels loaded)            -> gpu-tests.txt
#   tests33 / tests34  the same but the read ops (readops has them) with vLLM 0.33.0 / 0.34.0 -> gpu-tests-0.3X.0.txt
#   served   scripts/served_table.py with vLLM 0.34.0: as served vs as benchmarked -> served-table.md/.json
#   readops  the other cache ops: GPU tests (vLLM $READOPS_VLLM, default 0.34.0) and each op's sweep
#            -> gpu-tests-readops-VERSION.txt, readops.txt/.tgz (READOPS_SWEEPS=0: the tests only; READOPS_TESTS_S,
#            SWEEP_S: time limits)
#   releases kvbench vllm-history --releases $RELEASES with the packed kernels in .kernels -> releases-gpuN.tgz
#   tables   each op's sweep: vLLM's kernels, kvbench's, torch; 8 sizes   -> tables.tgz (JSON + text)
#   tune     launch-parameter variants of kvbench's Triton kernels, the sector model's check -> tune.txt
#            (TUNE_TABLES=flash,served,main,decode,decode-cache,mla,mla-decode,indexer,paged,sectors,gathers;
#            TUNE_ONLY: a regular expression the variants' names must match; TUNE_S: limit, default 300;
#            TUNE_NAME: the file's name; TUNE_VLLM: the vLLM whose Triton op the flash tables time beside kvbench's,
#            default 0.34.0)
#   history  vLLM 0.31.0, 0.32.0 and 0.33.0 through `kvbench vllm-history` (git tags stand in for vLLM's repository)
#            -> history.tgz (asv results + machine file)
#   lanes GPU:JOBS...  jobs run one after another per GPU, the GPUs in parallel (JOBS: tests, tables, tune, aa,
#            main / family: the default suite's main grid / other classes through bench.sh, timed)
#   suite    the whole default suite with every implementation (scripts/bench.sh: publishes even when a benchmark
#            fails), timed, with the run log                              -> suite.tgz
#   fullaa   the whole default suite twice, same code (run B on an empty commit), each timed, then asv compare
#            --factor 1.05                                                 -> full-a.tgz, full-b.tgz
#   final    the GPU tests, the whole default suite (published through bench.sh), an A/A subset (KVCacheWrite and
#            IndexerWrite, bf16, 4 sizes) against it                     -> gpu-tests.txt, final-a.tgz, final-b.tgz
#   beforeafter  KVCacheWrite (bf16, 5 sizes) and IndexerWrite, every implementation: one case per process
#            (KVBENCH_BATCH=0) then batches, timed, asv compare            -> beforeafter.tgz
set -uo pipefail
. scripts/device-env.sh
TOKENS="2 16 64 256 1024 4096 16384 65536"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
case $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1) in  # asv's machine: the card's
  # (a call for an H200 may get an H100; a GH200 is neither)
  "NVIDIA H200"*) MACHINE=h200-device ;; "NVIDIA H100"*) MACHINE=h100-device ;; *) MACHINE=gpu-device ;; esac
asv machine --yes --machine $MACHINE >/dev/null; kvbench asv-machine --machine $MACHINE >/dev/null
use_vllm() {  # VERSION: that vLLM release's kernels for this shell and asv's benchmark processes: kvbench's own pack
  # .kernels/VERSION (kvbench vllm-kernels VERSION --gpu sm_90 --xz --into .kernels) when carried, else .vllm-VERSION
  # or .vllm (0.33.0) made by the packing tool with an activate.sh
  local dir=$root/.kernels/$1
  if [ -d "$dir/vllm" ]; then
    export PYTHONPATH="$dir${PYTHONPATH:+:$PYTHONPATH}" ASV_PYTHONPATH="$dir${ASV_PYTHONPATH:+:$ASV_PYTHONPATH}"
  elif [ -f "$root/.vllm-$1/activate.sh" ]; then . "$root/.vllm-$1/activate.sh"
  elif [ "$1" = 0.33.0 ] && [ -f "$root/.vllm/activate.sh" ]; then . "$root/.vllm/activate.sh"
  else echo "no kernels of vLLM $1 carried (.kernels/$1 or .vllm-$1)"; return 1; fi
}
sweep() {  # name args...: one sweep, its table on stdout, JSON and error lines kept in $OUT/${SWEEP_DIR:-tables}
  local name=$1 dir=$OUT/${SWEEP_DIR:-tables}; shift
  echo "--- $name: $*"
  timeout -k 10 "${SWEEP_S:-150}" python3 -m kvbench.cli sweep --num-tokens $TOKENS --iters 30 \
    --json "$dir/$name.json" "$@" 2> "$dir/$name.log" | grep -v "^ *[a-z_]*: "
}
tables() {  # each op's sweep: vLLM's kernels, kvbench's, torch; 8 sizes -> tables.tgz
  step tables; mkdir -p "$OUT/tables"
  ( use_vllm 0.33.0 || exit 1
    sweep kv-auto --implementation vllm-flash vllm-triton triton torch
    sweep kv-fp8 --implementation vllm-flash vllm-triton triton torch --kv-cache-dtype fp8
    sweep kv-paged-32h --implementation vllm triton torch --layout paged --num-heads 32
    for kv in auto fp8 fp8_ds_mla; do for l2 in warm cold; do
      # (cold: a cache with room for a rotation of 4x the L2, as the suite's MLAWrite)
      sweep mla-$kv-$l2 --op mla --implementation vllm triton torch --kv-cache-dtype $kv --l2 $l2 \
        $([ $l2 = cold ] && echo --num-blocks 8192); done; done
    sweep indexer --op indexer --implementation vllm triton torch
    for kv in int8 fp8; do sweep thq-$kv --op token-head-quant --implementation vllm-triton triton torch \
      --kv-cache-dtype $kv; done ) > "$OUT/tables/tables.txt" 2>&1
  tar -czf "$OUT/tables.tgz" -C "$OUT" tables && rm -rf "$OUT/tables"; echo "tables done"
}
gpu_tests() {  # [VERSION [NAME [PYTEST ARGS...]]]: the GPU tests with that vLLM's kernels (default 0.33.0) -> NAME.txt
  local version=${1:-0.33.0} name=${2:-gpu-tests}
  step "GPU tests with vLLM $version"
  ( use_vllm "$version" || exit 1; timeout -s INT -k 20 "${GPU_TESTS_S:-290}" python3 -m pytest -m gpu tests -q \
    -p no:cacheprovider -rf --durations=15 "${@:3}" 2>&1 ) | tee "$OUT/$name.txt" | tail -n 45
}
served_table() {  # VERSION: scripts/served_table.py with that vLLM's kernels -> served-table.md / .json
  step "served table with vLLM $1"
  ( use_vllm "$1" || exit 1; timeout "${SERVED_S:-240}" python3 scripts/served_table.py "$OUT" 2> "$OUT/served-table.log" \
    | tail -n 90 ) || tail -n 5 "$OUT/served-table.log"
}
tune() {  # TUNE_TABLES (default all: flash,served,main,decode,mla,mla-decode,indexer,paged,sectors,gathers), TUNE_S
  # (300) -> ${TUNE_NAME:-tune}.txt
  step "tune ${TUNE_TABLES:-all tables}"
  local file=$OUT/${TUNE_NAME:-tune}.txt
  ( use_vllm "${TUNE_VLLM:-0.34.0}" || echo "(the flash tables without vLLM's Triton op)"  # its row beside kvbench's
    timeout "${TUNE_S:-300}" python3 scripts/tune_triton.py --quick ${TUNE_TABLES:+--tables "$TUNE_TABLES"} \
      ${TUNE_ONLY:+--only "$TUNE_ONLY"} > "$file" 2>&1; echo "tune: exit $?" ); grep -c "^|" "$file"; }
copy_tree() {  # DIR: this tree's code in DIR, a git repository of its own (asv files results under its commit)
  rm -rf "$1"; mkdir -p "$1"
  cp -r "$root/src" "$root/benchmarks" "$root/scripts" "$root"/asv*.json "$root/pyproject.toml" "$1/"
  ( cd "$1"; git init -q -b main; git add -A -- src benchmarks scripts asv.conf.json pyproject.toml
    git -c user.name=d -c user.email=d@d commit -qm "kvbench under test" )
}
part() {  # NAME REGEX: the default suite's benchmarks matching REGEX, every implementation, through scripts/bench.sh
  # in a tree of its own (it publishes even when a benchmark fails), timed -> NAME.tgz
  local name=$1 regex=$2 dir=/tmp/$1
  step "suite part $name (-b '$regex') on GPU $CUDA_VISIBLE_DEVICES"
  copy_tree $dir
  ( cd $dir; export KVBENCH_MACHINE=$MACHINE KVBENCH_SKIP_SETUP=1 KVBENCH_DEVICE=cuda; use_vllm 0.33.0 || exit 1
    mkdir -p log; start=$(date +%s); bash scripts/bench.sh -b "$regex" > log/bench.txt 2>&1; rc=$?
    echo "part $name: bench.sh exit $rc, $(( $(date +%s) - start )) s, site: $(ls .asv/html/index.html)" | tee -a log/bench.txt
    tail -n 12 log/bench.txt
    tar -czf "$OUT/$name.tgz" log .asv/results .asv/run-log.jsonl .asv/html )
}
aa() {  # A/A: KVCacheWrite (bfloat16 at 16, 256, 4096, 65536 tokens; every implementation) under two commits of the
  # same code, then asv compare --factor 1.05 -> aa.tgz
  step "A/A on GPU $CUDA_VISIBLE_DEVICES"; copy_tree /tmp/aa
  ( cd /tmp/aa; export KVBENCH_DEVICE=cuda KVBENCH_DTYPES=bfloat16 KVBENCH_NUM_TOKENS=16,256,4096,65536
    use_vllm 0.33.0 || exit 1; mkdir -p log; python3 -m kvbench.cli asv-machine --machine $MACHINE > /dev/null
    A=$(git rev-parse HEAD); bash scripts/asv-run.sh "$A" --machine $MACHINE -b 'KVCacheWrite\.time' > log/a.txt 2>&1
    B=$(new_commit "A/A: same code")
    bash scripts/asv-run.sh "$B" --machine $MACHINE -b 'KVCacheWrite\.time' > log/b.txt 2>&1
    compare "$A" "$B" log/compare.txt
    for c in "$A" "$B"; do python3 -m kvbench.cli asv-report .asv/results/$MACHINE/${c:0:8}*.json | head -n 1; done
    tar -czf "$OUT/aa.tgz" log .asv/results )
}
compare() {  # A B FILE: asv compare --factor 1.05 of two commits, and how many benchmarks it flagged
  python3 -m asv compare --machine $MACHINE --factor 1.05 --split "$1" "$2" > "$3" 2>&1
  echo "flagged at --factor 1.05: $(grep -cE '^\| *[-+x!] *\|' "$3") of $(grep -cE '^\| .*\| benchmarks' "$3" || true) rows"
}
timed_run() {  # NAME LIMIT_S COMMAND...: run it with a time limit, say how long it took and how it ended
  local name=$1 limit=$(( $2 > 1 ? $2 : 1 )) start=$(date +%s) rc=0; shift 2
  timeout "$limit" "$@" > "log/$name.txt" 2>&1 || rc=$?
  echo "$name: exit $rc in $(( $(date +%s) - start )) s ($(cat "$KVBENCH_STATE_LOG" 2>/dev/null | wc -l) processes logged)"
}
new_commit() { git -c user.name=d -c user.email=d@d commit -q --allow-empty -m "$1"; git rev-parse HEAD; }
PARTS=('IndexerWrite|KVCacheWrite\.|KVCacheWriteBF16'  # the whole default suite in two parts (every class)
       'InterleavedV|Patterns|Shapes|MLAWrite|TokenHeadQuantWrite|Served|ConvertFp8|Gather|SwapBlocks|MLAGrouped|ConcatMLAQ|MLARope')
suite_run() {  # NAME COMMIT DEADLINE_S: the whole default suite in two asv runs (a part cut off by the deadline
  # loses only itself), timed, state log in log/NAME.jsonl
  local start=$SECONDS i=0; export KVBENCH_STATE_LOG=$PWD/log/$1.jsonl
  for part in "${PARTS[@]}"; do i=$((i + 1))
    timed_run "$1-part$i" $(( $3 - SECONDS )) bash scripts/asv-run.sh "$2" --machine $MACHINE -b "$part"; done
  echo "$1: whole suite $(( SECONDS - start )) s"
}
fullaa() {
  step "whole default suite twice (A/A), every implementation (vLLM 0.33)"; copy_tree /tmp/full
  ( cd /tmp/full; export KVBENCH_DEVICE=cuda; use_vllm 0.33.0 || exit 1; mkdir -p log
    python3 -m kvbench.cli asv-machine --machine $MACHINE > /dev/null; A=$(git rev-parse HEAD)
    suite_run run-a "$A" 300
    tar -czf "$OUT/full-a.tgz" log .asv/results
    B=$(new_commit "A/A: same code"); suite_run run-b "$B" 580
    compare "$A" "$B" log/compare.txt; grep -E '^\| *[-+x!] *\|' log/compare.txt | head -n 20
    tar -czf "$OUT/full-b.tgz" log .asv/results )
}
final() {  # the GPU tests, the whole default suite (run A: its second part through bench.sh, which publishes the
  # commit's results, failures included), then an A/A of KVCacheWrite + IndexerWrite (bf16, 4 sizes) against it
  GPU_TESTS_S=80 gpu_tests
  step "whole default suite (A), then the A/A subset (B)"; copy_tree /tmp/full
  ( cd /tmp/full; export KVBENCH_DEVICE=cuda KVBENCH_MACHINE=$MACHINE KVBENCH_SKIP_SETUP=1; use_vllm 0.33.0 || exit 1
    mkdir -p log; python3 -m kvbench.cli asv-machine --machine $MACHINE > /dev/null; A=$(git rev-parse HEAD)
    export KVBENCH_STATE_LOG=$PWD/log/run-a.jsonl; start=$SECONDS
    timed_run run-a-part1 $(( 270 - SECONDS )) bash scripts/asv-run.sh "$A" --machine $MACHINE -b "${PARTS[0]}"
    timed_run run-a-part2 $(( 430 - SECONDS )) bash scripts/bench.sh -b "${PARTS[1]}"
    echo "run A: whole suite $(( SECONDS - start )) s"; tail -n 12 log/run-a-part2.txt; ls -la .asv/html/index.html
    tar -czf "$OUT/final-a.tgz" log .asv/results .asv/run-log.jsonl .asv/html
    B=$(new_commit "A/A: same code"); export KVBENCH_STATE_LOG=$PWD/log/run-b.jsonl
    KVBENCH_DTYPES=bfloat16 KVBENCH_NUM_TOKENS=16,256,4096,65536 timed_run run-b $(( 470 - SECONDS )) \
      bash scripts/asv-run.sh "$B" --machine $MACHINE -b "${PARTS[0]}"
    compare "$A" "$B" log/compare.txt; grep -E '^\| *[-+x!] *\|' log/compare.txt | head -n 20
    tar -czf "$OUT/final-b.tgz" log .asv/results )
}
beforeafter() {
  step "one case per process, then batches: KVCacheWrite (bf16, 5 sizes) and IndexerWrite"; copy_tree /tmp/ba
  ( cd /tmp/ba; export KVBENCH_DEVICE=cuda KVBENCH_DTYPES=bfloat16 KVBENCH_NUM_TOKENS=2,16,256,4096,65536
    use_vllm 0.33.0 || exit 1; mkdir -p log; python3 -m kvbench.cli asv-machine --machine $MACHINE > /dev/null
    bench='KVCacheWrite\.time|IndexerWrite'; A=$(git rev-parse HEAD)
    KVBENCH_BATCH=0 KVBENCH_STATE_LOG=$PWD/log/before.jsonl timed_run before 250 bash scripts/asv-run.sh "$A" \
      --machine $MACHINE -b "$bench"
    B=$(new_commit "batches"); KVBENCH_STATE_LOG=$PWD/log/after.jsonl timed_run after 120 bash scripts/asv-run.sh "$B" \
      --machine $MACHINE -b "$bench"
    compare "$A" "$B" log/compare.txt
    tar -czf "$OUT/beforeafter.tgz" log .asv/results )
}
root=$PWD
for phase in "$@"; do case $phase in
releases)  # vLLM's history, release by release: RELEASES="0.20.0 0.21.0 ..." whose kernels were packed into .kernels
  # beforehand (scripts/device-prepare.sh: 8-17 MB each, three or four to a call beside .whl). The history's grid: HISTORY_TOKENS (default 2,64,1024,16384,65536), HISTORY_DTYPES (bfloat16), HISTORY_BENCH (asv -b; default: the history benchmarks).
  # With several GPUs the releases are dealt out to them, one lane (its own tree) per GPU -> releases-gpuN.tgz
  step "vLLM history: ${RELEASES:?set RELEASES}"
  if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then IFS=, read -ra gpu_ids <<< "$CUDA_VISIBLE_DEVICES"  # a lane's own
  else mapfile -t gpu_ids < <(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null); fi
  [ ${#gpu_ids[@]} -gt 0 ] || gpu_ids=(0)
  i=0; lanes=()
  for v in $RELEASES; do lanes[i % ${#gpu_ids[@]}]="${lanes[i % ${#gpu_ids[@]}]:-} $v"; i=$((i + 1)); done
  for n in "${!lanes[@]}"; do gpu=${gpu_ids[n]}
    ( export CUDA_VISIBLE_DEVICES=$gpu KVBENCH_DEVICE=cuda KVBENCH_NUM_TOKENS=${HISTORY_TOKENS:-2,64,1024,16384,65536} \
        KVBENCH_DTYPES=${HISTORY_DTYPES:-bfloat16}
      dir=/tmp/releases-$gpu; start=$SECONDS; copy_tree $dir 2>/dev/null; cd $dir; mkdir -p .asv/vllm
      # the state log keeps each failure's and skip's reason (the landing page and asv-summary read it)
      KVBENCH_STATE_LOG=$dir/.asv/vllm/run-log.jsonl timeout "${RELEASES_S:-560}" python3 -m kvbench.cli vllm-history --releases ${lanes[n]} \
        --kernels-dir "$root/.kernels" --machine $MACHINE ${HISTORY_BENCH:+-- -b "$HISTORY_BENCH"} > log.txt 2>&1; rc=$?
      grep -E "^vllm |error" log.txt | sed "s/^/[GPU $gpu] /"
      echo "[GPU $gpu] releases${lanes[n]}: exit $rc in $(( SECONDS - start )) s"
      cp ~/.asv-machine.json .asv/vllm/asv-machine.json 2>/dev/null; cp log.txt .asv/vllm/log.txt
      tar -czf "$OUT/releases-gpu$gpu.tgz" -C .asv/vllm results asv-machine.json run-log.jsonl log.txt ) &
    sleep 2  # the lanes write the same asv machine file at their start
  done
  wait ;;
tests34) GPU_TESTS_S=${GPU_TESTS_S:-280} gpu_tests 0.34.0 gpu-tests-0.34.0 --ignore=tests/test_read_ops.py ;;
tests33) GPU_TESTS_S=${GPU_TESTS_S:-280} gpu_tests 0.33.0 gpu-tests-0.33.0 --ignore=tests/test_read_ops.py ;;
served) served_table 0.34.0 ;;
readops)  # the other cache ops: their GPU tests with vLLM $READOPS_VLLM (0.34.0), then each op's sweep
  step "read side and other cache ops (vLLM ${READOPS_VLLM:-0.34.0})"
  ( use_vllm "${READOPS_VLLM:-0.34.0}" || exit 1; export SWEEP_DIR=readops
    timeout -s INT -k 20 "${READOPS_TESTS_S:-240}" python3 -m pytest -m gpu tests/test_read_ops.py \
      tests/test_coverage.py -q -p no:cacheprovider -rf --durations=10 2>&1 \
      | tee "$OUT/gpu-tests-readops-${READOPS_VLLM:-0.34.0}.txt" | tail -n 25
    [ "${READOPS_SWEEPS:-1}" = 0 ] && exit 0  # the tests only (a card whose tables are not wanted)
    mkdir -p "$OUT/readops"
    for op in convert-fp8 gather cp-gather indexer-gather upconvert-gather swap-blocks mla-grouped concat-mla-q mla-rope
    do sweep "$op" --op "$op"; done > "$OUT/readops.txt" 2>&1
    tar -czf "$OUT/readops.tgz" -C "$OUT" readops && rm -rf "$OUT/readops"  # $OUT brings back 8 files at most
    tail -n 40 "$OUT/readops.txt" ) ;;
fullaa) fullaa ;;
final) final ;;
beforeafter) beforeafter ;;
tests) gpu_tests ;;
tables) tables ;;
tune) tune ;;
history)
  step "vLLM history 0.31.0 -> 0.33.0"
  repo=/tmp/vllm-tags; bash scripts/vllm-tags.sh $repo
  for v in 0.31.0 0.32.0 0.33.0; do
    ( use_vllm $v || exit 1; KVBENCH_IMPLEMENTATIONS=vllm,vllm-flash,vllm-triton KVBENCH_NUM_TOKENS=16,1024,65536 \
      KVBENCH_DTYPES=bfloat16 timeout 70 python3 -m kvbench.cli vllm-history --vllm-repo $repo --machine $MACHINE \
      -- -b 'KVCacheWrite\.time_cudagraph|KVCacheWriteBF16' 2>&1 | tail -n 4 )
  done
  cp ~/.asv-machine.json .asv/vllm/asv-machine.json 2>/dev/null
  tar -czf "$OUT/history.tgz" -C .asv/vllm results asv-machine.json && echo "history done" ;;
lanes)  # the remaining arguments: GPU:JOB,JOB... for each GPU, run in parallel; jobs: tests tables tune aa
  # main (the main grid KVCacheWrite + KVCacheWriteBF16) family (every other class), or any phase of this script
  # (tests33, tests34, served, readops, suite, ...: run as `bash scripts/device.sh PHASE` on that GPU). Each
  # lane's lines are prefixed [GPU N]; a phase's files keep their names, so give one GPU each phase at most once.
  for lane in "${@:2}"; do
    gpu=${lane%%:*}; jobs=${lane#*:}
    ( export CUDA_VISIBLE_DEVICES=$gpu
      for job in ${jobs//,/ }; do case $job in
        tests) gpu_tests ;; tables) tables ;; tune) tune ;; aa) aa ;;
        main) part main 'KVCacheWrite\.|KVCacheWriteBF16' ;;
        family) part family 'Shapes|Patterns|InterleavedV|MLAWrite|IndexerWrite|TokenHeadQuantWrite' ;;
        *) bash "$root/scripts/device.sh" "$job" ;; esac
      done 2>&1 | sed -u "s/^/[GPU $gpu] /" ) &
    sleep 2  # the parts write the same asv machine file at their start
  done
  wait; break ;;
suite)  # SUITE_VLLM (default 0.34.0): the whole default suite with that vLLM's kernels, timed
  step "whole default suite, every implementation (vLLM ${SUITE_VLLM:-0.34.0})"
  ( use_vllm "${SUITE_VLLM:-0.34.0}" || exit 1; start=$(date +%s)
    KVBENCH_SKIP_SETUP=1 KVBENCH_DEVICE=cuda KVBENCH_MACHINE=$MACHINE timeout 560 bash scripts/bench.sh \
      > "$OUT/suite.txt" 2>&1
    echo "bench.sh exit $?, $(( $(date +%s) - start )) s" | tee -a "$OUT/suite.txt"
    tail -n 12 "$OUT/suite.txt"; ls .asv/html/index.html )
  tar -czf "$OUT/suite.tgz" .asv/results .asv/run-log.jsonl 2>/dev/null ;;
esac; done
