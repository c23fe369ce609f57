# Sourced by scripts/device.sh on a GPU machine without network: wheels fetched elsewhere into .whl (asv and what
# it needs), paths, and a git commit for asv to file results under (the copy on such a machine may come without
# history; fixed dates make the same tree give the same hash in every call).
OUT=${OUT:-artifacts}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
if [ -d .whl ] && [ ! -e /tmp/site/.kvbench-installed ]; then  # once per machine (lanes run this script again)
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && touch /tmp/site/.kvbench-installed
fi
if [ -d /tmp/site ] && [[ ":${PYTHONPATH:-}:" != *":/tmp/site:"* ]]; then
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
fi
export PYTHONPATH=$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 KVBENCH_CACHE_DIR=$PWD/.kvbench-cache
export ASV_PYTHONPATH=$PYTHONPATH PYTHONNOUSERSITE=1  # asv drops PYTHONPATH in benchmark processes
kvbench() { python3 -m kvbench.cli "$@"; }
asv() { python3 -m asv "$@"; }
export -f kvbench asv  # scripts/bench.sh, run as a child, uses them too
step() { echo; echo "=== $* ($(date +%T))"; }
if ! git rev-parse HEAD >/dev/null 2>&1; then
  export GIT_AUTHOR_DATE=2026-11-28T00:00:00Z GIT_COMMITTER_DATE=2026-11-28T00:00:00Z
  rm -rf .git && git init -q -b main && git add -A -- src benchmarks scripts asv.conf.json asv.vllm.conf.json \
    pyproject.toml README.md && git -c user.name=device -c user.email=device@localhost commit -qm device
fi
