#!/usr/bin/env bash
# The test suite, as CI runs it: installs what the data-parallel tests need when it is missing
# (Debian packages: Open MPI's runtime and headers, and clang, which the MPI bindings are
# generated with) and NVRTC for the CUDA kernel test (scripts/nvrtc.sh: a PyPI wheel in a venv
# outside the repository; no GPU needed), then runs every test with the `mpi` and `cuda`
# features, NVRTC on the library path, and MOCOV3_REQUIRE_NVRTC=1 and MOCOV3_REQUIRE_CXX=1 (so
# neither the kernels' compile test nor the op suite on the emulated GPU, tests/cuda_ops.rs, can
# skip).
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh --test data_parallel`).
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
[ -e /usr/lib/x86_64-linux-gnu/pkgconfig/ompi.pc ] || pkg-config --exists ompi 2>/dev/null || need+=(libopenmpi-dev)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need+=(clang)
# The emulated GPU (engine/cuda/emu.rs) builds the kernels with the system C++ compiler; NVRTC's wheel goes
# into a Python venv (Debian ships venv's pip bootstrap as python3-venv).
command -v g++ >/dev/null 2>&1 || command -v clang++ >/dev/null 2>&1 || need+=(g++)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing the test dependencies: ${need[*]}" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}";
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; fi
fi
nvrtc_lib=$(scripts/nvrtc.sh)
export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export MOCOV3_REQUIRE_NVRTC=1 MOCOV3_REQUIRE_CXX=1
exec cargo test --release --features "mpi cuda" "$@"
