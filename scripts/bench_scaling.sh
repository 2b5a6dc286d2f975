#!/usr/bin/env bash
# How the C1 step grows with batch size (16 -> 256) and the C2 model with image size (32 -> 224,
# patch 16), plus the GEMM rate of this machine: the tables of BENCHMARKS.md.
#   scripts/bench_scaling.sh [PYTHON]   (PYTHON with torch adds PyTorch's GEMM rate)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/target/release/mocov3"
py=${1:-}
"$bin" bench gemm --n 2048
[ -n "$py" ] && "$py" "$here/scripts/gemm_rate_torch.py" --n 2048
for b in 16 32 64 128 256; do
  out=$(/usr/bin/time -v "$bin" bench step --config C1 --batch "$b" --warmup 1 --steps 3 2>&1)
  echo "C1 batch=$b $(grep RESULT <<<"$out" | grep -o 'img_per_s=[^ ]*') $(grep -o '[0-9.]* GFLOP/s achieved' <<<"$out") peak_rss_mib=$(( $(grep 'Maximum resident' <<<"$out" | awk '{print $NF}') / 1024 ))"
done
for i in 32 64 128 224; do
  out=$(/usr/bin/time -v "$bin" bench step --config C2 --image "$i" --warmup 1 --steps 3 2>&1)
  echo "C2 image=$i $(grep RESULT <<<"$out" | grep -o 'img_per_s=[^ ]*') $(grep -o '[0-9.]* GFLOP/s achieved' <<<"$out") peak_rss_mib=$(( $(grep 'Maximum resident' <<<"$out" | awk '{print $NF}') / 1024 ))"
done
