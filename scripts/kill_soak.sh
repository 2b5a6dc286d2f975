#!/usr/bin/env bash
# Kill soak: run `mocov3 pretrain` straight, then again killed with SIGKILL at up to K random
# moments (each run resumed from its latest checkpoint, until one finishes), and compare the two final checkpoints' tensor
# checksums (the CRC-32 every checkpoint carries): equal means not a bit was lost.
# Usage: scripts/kill_soak.sh [K] [PRETRAIN ARGS...]   (default: 10 kills of a tiny-synthetic run)
set -euo pipefail
cd "$(dirname "$0")/.."
k=${1:-10}; shift || true
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(--preset tiny-synthetic --epochs 4 --max-steps-per-epoch 40 --checkpoint-every 1 --threads 1)
bin=target/release/mocov3
dir=$(mktemp -d)
crc() { grep -a -o '"tensors_crc32":"[0-9a-f]*"' "$1/checkpoint.safetensors" | head -1; }
t0=$(date +%s.%N)
"$bin" pretrain "${args[@]}" --out "$dir/straight" --quiet
full=$(echo "$(date +%s.%N) - $t0" | bc)
echo "uninterrupted run: ${full} s, $(crc "$dir/straight")"
kills=0
while :; do
  resume=()
  [ -e "$dir/soak/checkpoint.safetensors" ] && resume=(--resume "$dir/soak/checkpoint.safetensors")
  "$bin" pretrain "${args[@]}" --out "$dir/soak" --quiet "${resume[@]}" &
  pid=$!
  # Uniform in [0, 2·full/K]: on average K kills land before the run ends.
  sleep "$(awk -v f="$full" -v k="$k" -v s="$RANDOM" 'BEGIN { printf "%.3f", 2 * f / k * (s % 1000) / 1000 }')"
  if [ "$kills" -lt "$k" ] && kill -KILL "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
    kills=$((kills + 1))
  else
    wait "$pid"   # it finished before its kill (or all K kills have landed): the run is done
    break
  fi
done
a=$(crc "$dir/straight"); b=$(crc "$dir/soak")
echo "after $kills SIGKILLs: $b"
[ "$a" = "$b" ] && echo "final tensors identical: 0 bytes lost" || { echo "DIFFERENT"; exit 1; }
rm -rf "$dir"
