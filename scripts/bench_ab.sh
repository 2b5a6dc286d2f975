#!/usr/bin/env bash
# A/B of two mocov3 binaries on one `bench step` configuration: alternated ROUNDS times in one
# run, median img/s of each and their ratio, and whether the per-step loss bits agree (a
# refactor that claims to change no number must print "losses: bit-identical").
#
#   scripts/bench_ab.sh OLD_BIN NEW_BIN "--config C1" [ROUNDS=3]
#   scripts/bench_ab.sh /tmp/mocov3-old target/release/mocov3 "--arch resnet50" 3
#
# Both binaries must print loss bits (bench step's "(bits ...)"; older ones need that one-line
# change to main.rs). Run on an otherwise idle machine; quote the CPU (lscpu) with the result.
set -euo pipefail
old=$1 new=$2 args=$3 rounds=${4:-3}
dir=$(mktemp -d)
for r in $(seq 1 "$rounds"); do
  for who in old new; do
    bin=$old; [ "$who" = new ] && bin=$new
    # shellcheck disable=SC2086
    "$bin" bench step $args >"$dir/$who.$r" 2>&1
    echo "round $r $who $(grep '^RESULT' "$dir/$who.$r")"
  done
done
med() { grep -ho 'img_per_s=[0-9.]*' "$dir"/"$1".* | cut -d= -f2 | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mo=$(med old) mn=$(med new)
echo "median img/s: old $mo new $mn ratio new/old $(awk -v a="$mn" -v b="$mo" 'BEGIN {printf "%.3f", a / b}')"
if diff <(grep -o 'bits [0-9a-f]*' "$dir/old.1") <(grep -o 'bits [0-9a-f]*' "$dir/new.1") >/dev/null \
   && [ -n "$(grep -o 'bits [0-9a-f]*' "$dir/new.1")" ]; then
  echo "losses: bit-identical ($(grep -c 'bits ' "$dir/new.1") steps)"
else
  echo "losses: DIFFER (or no bits printed)"
fi
