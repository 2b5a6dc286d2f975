#!/usr/bin/env bash
# Run every command of the README's ```sh blocks as printed (`mocov3` is target/release/mocov3),
# in order, each for at most LIMIT seconds (default 200), and report per command: ok, failed
# (with the last lines of its output), or still running at the limit (it started and ran).
# Usage: scripts/check_readme.sh [SKIP_REGEX]   e.g. 'quickstart.sh|test.sh'
set -uo pipefail
cd "$(dirname "$0")/.."
limit=${LIMIT:-200}
skip=${1:-'^$'}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
mkdir -p runs
awk '/^```sh/{f=1;next}/^```/{f=0}f' README.md | while IFS= read -r line; do
  [ -z "$line" ] && continue
  cmd=$(printf '%s' "$line" | sed -E 's#^mocov3 #target/release/mocov3 #')
  if printf '%s' "$line" | grep -qE "$skip"; then echo "SKIP   $line"; continue; fi
  t0=$(date +%s)
  out=$(timeout "$limit" bash -c "$cmd" 2>&1 < /dev/null); rc=$?
  dt=$(( $(date +%s) - t0 ))
  case $rc in
    0) echo "OK     (${dt} s) $line" ;;
    124) echo "LIMIT  (ran ${limit} s, still going) $line" ;;
    *) echo "FAIL   (rc $rc, ${dt} s) $line"; printf '%s\n' "$out" | tail -3 | sed 's/^/         /' ;;
  esac
done
