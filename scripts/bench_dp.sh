#!/usr/bin/env bash
# Data parallelism on one machine: the C1 training step (global batch 64) as one process with
# all cores against one MPI process per core (one thread each), alternated ROUNDS times, then
# the all-reduce over shared memory and over TCP loopback at a few message sizes.
# Needs a build with `cargo build --release --features mpi`. Usage: scripts/bench_dp.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bin=target/release/mocov3
cores=$(nproc)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
lscpu | grep "Model name" >&2
for r in $(seq "$rounds"); do
  echo "round $r: 1 process x $cores threads" >&2
  "$bin" bench step --config C1 --threads "$cores" 2>/dev/null | grep RESULT | sed "s/^/1x$cores /"
  echo "round $r: $cores processes x 1 thread" >&2
  mpirun -np "$cores" "$bin" bench step --config C1 --threads 1 2>/dev/null | grep RESULT | sed "s/^/${cores}x1 /"
done
for mib in 0.0625 1 16 64; do
  mpirun -np "$cores" "$bin" bench allreduce --mib "$mib" | sed 's/^/shm /'
  mpirun -np "$cores" --mca btl tcp,self --mca btl_tcp_if_include lo "$bin" bench allreduce --mib "$mib" | sed 's/^/tcp-loopback /'
done
