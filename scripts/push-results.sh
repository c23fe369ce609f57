#!/usr/bin/env bash
# Add this run's .asv/results to the `asv-results` branch and push it, retrying when another run pushed first.
# - The result files of the commit just benchmarked (GITHUB_SHA, else HEAD: `<machine>/<first 8 hex>-<env>.json`)
#   replace the branch's copies, so a rerun of a commit wins; the replaced file stays in the branch's git history.
#   machine.json and benchmarks.json are refreshed the same way.
# - Every other file (earlier commits' results, restored by restore-results.sh) is added when the branch lacks it
#   and never overwrites or deletes the branch's copy.
# - `git ls-remote` exit 2 (no asv-results branch yet) starts the branch; any other failure (128: network, auth,
#   no such repository) stops the script with an error, so a fresh branch never replaces the real history.
# Environment: REPO (owner/name) and GH_TOKEN (sent as an HTTP header, see git-auth.sh: not in argv, not on disk);
# RESULTS_REMOTE overrides the remote URL (tests: a local bare repository); RESULTS_WORKDIR, an empty or missing
# folder for the clone, which is then kept (default: a temporary folder, removed at exit).
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
. "$here/git-auth.sh"
[ -d .asv/results ] || { echo "push-results: no .asv/results here ($(pwd))" >&2; exit 1; }
if [ -n "${RESULTS_REMOTE:-}" ]; then
  remote=$RESULTS_REMOTE
else
  : "${REPO:?push-results: REPO (owner/name) is not set}" "${GH_TOKEN:?push-results: GH_TOKEN is not set}"
  remote="https://github.com/${REPO}.git"
fi
if [ -n "${RESULTS_WORKDIR:-}" ]; then
  work=$RESULTS_WORKDIR
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
sha=${GITHUB_SHA:-$(git rev-parse HEAD)}
short=${sha:0:8}

status=0
git ls-remote --exit-code "$remote" refs/heads/asv-results >/dev/null || status=$?
case $status in
  0) git clone -q --single-branch --branch asv-results "$remote" "$work" ;;
  2) echo "push-results: no asv-results branch at $remote yet; starting it"
     git init -q -b asv-results "$work" && git -C "$work" remote add origin "$remote" ;;
  *) echo "push-results: git ls-remote $remote failed (exit $status: network, authentication or no such" \
          "repository); not pushing, and not starting a new asv-results branch" >&2
     exit 1 ;;
esac

copy() {  # copy .asv/results into the clone: this commit's files and the two shared files replace, others add
  local f dest
  (cd .asv/results && find . -type f) | sort | while read -r f; do
    f=${f#./}
    dest="$work/results/$f"
    case "$f" in
      benchmarks.json|*/machine.json|*/"$short"-*.json) ;;
      *) [ -e "$dest" ] && continue ;;
    esac
    mkdir -p "$(dirname "$dest")"
    cp ".asv/results/$f" "$dest"
  done
}

for attempt in 1 2 3; do
  copy
  git -C "$work" add results
  if git -C "$work" diff --cached --quiet; then
    echo "push-results: nothing new for ${sha} (the branch already has these results)"
    exit 0
  fi
  replaced=$(git -C "$work" diff --cached --name-only --diff-filter=M -- 'results/*/*' |
             grep -vc '/machine\.json$' || true)
  message="results for ${sha}"
  [ "$replaced" -gt 0 ] && message="$message (rerun: replaces $replaced result file(s); the old ones stay in history)"
  git -C "$work" -c user.name=kvbench-bot -c user.email=kvbench-bot@users.noreply.github.com commit -q -m "$message"
  if git -C "$work" push -q origin asv-results; then
    echo "push-results: pushed $message"
    exit 0
  fi
  echo "push-results: push rejected (attempt $attempt); fetching the branch and trying again" >&2
  git -C "$work" fetch -q origin asv-results
  git -C "$work" reset -q --hard FETCH_HEAD
done
echo "push-results: could not push results after 3 attempts" >&2
exit 1
