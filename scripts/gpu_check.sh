#!/usr/bin/env bash
# The prepared device check, for a GPU machine with the NVIDIA driver and a PyTorch install (its
# CUDA 13 libraries are used), no Rust toolchain and no network. Build first, elsewhere:
#   scripts/gpu_stage.sh                      # -> target/gpu-bin/ (carry it to the GPU machine)
# then on the GPU machine, from the repository root:
#   scripts/gpu_check.sh [--official DIR] [--timm DIR] [--out DIR] [--quick]
# --official: a checkout of facebookresearch/moco-v3 (the peer of the step benchmark; imported,
# never modified). --timm: a folder holding timm 0.4.9 (`pip install --target DIR --no-deps
# timm==0.4.9` where there is network), put first on PYTHONPATH, for when the machine's own timm
# lacks the API vits.py uses; both travel to the machine untracked in the working tree. Each stage has its own time limit; the whole check stays under 8 minutes. Every
# stage's output goes to OUT (default: $OUT/gpu-check when $OUT is set, else runs/gpu-check), and
# a summary (summary.txt) says which passed, which failed and which are not built yet.
set -uo pipefail
cd "$(dirname "$0")/.."
official="" out="${OUT:+$OUT/gpu-check}" quick=0
out="${out:-runs/gpu-check}"
while [ $# -gt 0 ]; do
  case "$1" in
    --official) official="$2"; shift 2 ;;
    --timm) export PYTHONPATH="$2${PYTHONPATH:+:$PYTHONPATH}"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    *) echo "usage: scripts/gpu_check.sh [--official DIR] [--timm DIR] [--out DIR] [--quick]" >&2; exit 2 ;;
  esac
done
bin=target/gpu-bin
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
say() { echo "$*" | tee -a "$summary"; }
[ -x "$bin/mocov3" ] || { say "FAIL: $bin/mocov3 missing: run scripts/gpu_stage.sh where Rust is, and carry $bin"; exit 1; }

# The CUDA 13 libraries inside the PyTorch install (nvidia-* wheels), and NCCL, on the path.
py=$(command -v python3 || command -v python)
site=$("$py" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null)
libdirs=$(for s in $site; do find "$s/nvidia" "$s/torch/lib" \( -name 'libcublasLt.so.13*' -o -name 'libnvrtc.so.13*' \
  -o -name 'libcublas.so.13*' -o -name 'libnccl.so.2*' \) -printf '%h\n' 2>/dev/null; done | sort -u | paste -sd:)
export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
say "library path: $LD_LIBRARY_PATH"
{ nvidia-smi; nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv; } > "$out/nvidia-smi.txt" 2>&1
head -15 "$out/nvidia-smi.txt"

stage() { # name, limit in seconds, command...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  local rc=$?
  local verdict=PASS
  [ $rc -eq 0 ] || verdict="FAIL (exit $rc$([ $rc -eq 124 ] && echo ", over ${limit}s"))"
  say "$verdict: $name ($((SECONDS - t0)) s) -> $out/$name.txt"
  tail -4 "$out/$name.txt"
  return $rc
}

export MOCOV3_REQUIRE_GPU=1 MOCOV3_REQUIRE_NVRTC=1
# 1. Kernels through NVRTC for this GPU, and the whole op suite on it (each launcher against its
#    CPU op, reductions repeated bit for bit; the emulated half runs too where a C++ compiler is).
stage nvrtc 120 "$bin/cuda_kernels" --test-threads=1
stage op-suite 240 "$bin/cuda_ops" --test-threads=1
stage device-errors 60 "$bin/cuda_device" --test-threads=1
# 2. The GEMM rate the step's MFU is quoted against (cuBLASLt bf16 operands, f32 accumulation),
#    and f32 (no TF32).
stage gemm-bf16 60 "$bin/mocov3" bench gemm --device cuda --n 8192 --precision bf16
stage gemm-fp32 60 "$bin/mocov3" bench gemm --device cuda --n 4096 --precision fp32
# 3. The official step under AMP, ViT-S/16 224 px, batch 128 and 256, and torch.mm's bf16 rate.
if [ $quick -eq 0 ]; then
  stage official-amp 300 "$py" scripts/bench_official_amp.py ${official:+--official "$official"} --batches 128,256
fi
# 4. Not built yet: the step on the GPU (its parity with the CPU step, `bench step --device cuda`
#    against stage 3, and a 2-minute Fashion-MNIST pre-training with its kNN). The check says so
#    instead of skipping in silence.
if "$bin/mocov3" bench step --help 2>/dev/null | grep -q -- '--device'; then
  stage step-bf16 240 "$bin/mocov3" bench step --config C2 --device cuda --batch 128
else
  say "NOT BUILT: the training step on the GPU (step parity, bench step --device cuda, Fashion-MNIST on the GPU)"
fi
grep -h '^RESULT' "$out"/*.txt | tee -a "$summary"
! grep -q '^FAIL' "$summary"
