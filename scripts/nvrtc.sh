#!/usr/bin/env bash
# Installs NVRTC (CUDA 13's runtime compiler, CPU-only: no GPU or driver needed) for the CUDA
# kernel test, tests/cuda_kernels.rs, and prints the directory holding libnvrtc.so.13. NVRTC comes
# from the PyPI wheel nvidia-cuda-nvrtc, pip-installed into a virtual environment outside the
# repository (${XDG_CACHE_HOME:-$HOME/.cache}/mocov3/nvrtc-venv, or $MOCOV3_NVRTC_VENV), once: a
# later run finds it there. Needs python3 with venv and pip, and PyPI the first time.
set -euo pipefail
version=13.0.88
venv=${MOCOV3_NVRTC_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/mocov3/nvrtc-venv}
libdir() { ls -d "$venv"/lib/python3*/site-packages/nvidia/cu13/lib 2>/dev/null | head -n1; }
dir=$(libdir || true)
if [ -z "$dir" ] || [ ! -e "$dir/libnvrtc.so.13" ] || [ ! -e "$venv/.nvrtc-$version" ]; then
  echo "installing NVRTC (PyPI nvidia-cuda-nvrtc==$version) into $venv" >&2
  command -v python3 >/dev/null 2>&1 || { echo "python3 not found: the CUDA kernel test needs it to install NVRTC" >&2; exit 1; }
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "nvidia-cuda-nvrtc==$version" >&2
  touch "$venv/.nvrtc-$version"
  dir=$(libdir)
fi
[ -e "$dir/libnvrtc.so.13" ] || { echo "libnvrtc.so.13 not found under $venv after installing" >&2; exit 1; }
echo "$dir"
