#!/usr/bin/env bash
# Build, here, what scripts/gpu_check.sh runs on a GPU machine that has no Rust toolchain: the
# mocov3 binary and the CUDA test binaries, built with `--features cuda` (no MPI: the GPU machine
# may lack Open MPI's libraries), stripped, into target/gpu-bin/ (carried to the machine).
#   scripts/gpu_stage.sh && <carry target/gpu-bin> scripts/gpu_check.sh [--official DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=target/gpu-bin
rm -rf "$out" && mkdir -p "$out"
cargo build --release --features cuda --bin mocov3
cp target/release/mocov3 "$out/"
cargo test --release --features cuda --no-run --message-format=json --test cuda_ops --test cuda_kernels --test cuda_device \
  | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do cp "$exe" "$out/$name"; done
strip --strip-debug "$out"/*
ls -la "$out"
