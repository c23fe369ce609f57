#!/usr/bin/env bash
# Append .asv/results to the `asv-results` branch: files are added, never overwritten or deleted (a result file
# is one machine's results for one commit; machine.json and benchmarks.json are refreshed), then pushed, with
# retries when another run pushed first. Needs GH_TOKEN and REPO (owner/name) in the environment.
set -euo pipefail
work=$(mktemp -d)
remote="https://x-access-token:${GH_TOKEN}@github.com/${REPO}.git"
if git ls-remote --exit-code "$remote" asv-results >/dev/null; then
  git clone -q --single-branch --branch asv-results "$remote" "$work"
else
  git init -q -b asv-results "$work" && git -C "$work" remote add origin "$remote"
fi
for attempt in 1 2 3; do
  mkdir -p "$work/results"
  (cd .asv/results && find . -type f) | while read -r f; do
    case "$f" in
      */machine.json|./benchmarks.json) mkdir -p "$work/results/$(dirname "$f")"; cp ".asv/results/$f" "$work/results/$f" ;;
      *) [ -e "$work/results/$f" ] || { mkdir -p "$work/results/$(dirname "$f")"; cp ".asv/results/$f" "$work/results/$f"; } ;;
    esac
  done
  git -C "$work" add results
  git -C "$work" -c user.name=kvbench-bot -c user.email=kvbench-bot@users.noreply.github.com \
    commit -q -m "results for ${GITHUB_SHA:-$(git rev-parse HEAD)}" || exit 0  # nothing new
  git -C "$work" push -q origin asv-results && exit 0
  git -C "$work" fetch -q origin asv-results && git -C "$work" reset -q --hard origin/asv-results
done
echo "could not push results after 3 attempts" >&2
exit 1
