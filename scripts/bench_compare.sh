#!/usr/bin/env bash
# Side-by-side: `mocov3 bench step` and the PyTorch peer, alternated ROUNDS times in one run on
# the same machine; prints each RESULT, peak memory of each run, and the ratio of median img/s.
#
#   scripts/bench_compare.sh C1 [ROUNDS=3] [PYTHON=python3]
#   OFFICIAL=path/to/moco-v3 scripts/bench_compare.sh resnet50 [ROUNDS] [PYTHON]
#   scripts/bench_compare.sh data [ROUNDS] [PYTHON]   (mocov3 bench data vs torchvision + PIL,
#                                                     one thread each, on the same JPEG files)
#
# C1/C2 run the ViT peer (scripts/bench_step_torch.py); resnet18/resnet50 run the official code
# itself (scripts/bench_resnet_official.py, batch 8 at 224 px; resnet18_cifar: the CIFAR stem,
# batch 32 at 32 px; BATCH and IMAGE override).
# Needs a release build (cargo build --release) and PyTorch (+ torchvision) in PYTHON's environment.
set -euo pipefail
cfg=${1:-C1}
rounds=${2:-3}
py=${3:-${PYTHON:-python3}}
here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/target/release/mocov3"
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
"$py" -c 'import torch' 2>/dev/null || { echo "PyTorch is not importable by $py (pip install torch)" >&2; exit 1; }
log=$(mktemp)
if [ "$cfg" = resnet18_cifar ]; then batch=${BATCH:-32} image=${IMAGE:-32}; else batch=${BATCH:-8} image=${IMAGE:-224}; fi
for r in $(seq 1 "$rounds"); do
  for who in mocov3 pytorch; do
    case "$who:$cfg" in
      mocov3:resnet*) cmd=("$bin" bench step --arch "$cfg" --batch "$batch" --image "$image") ;;
      pytorch:resnet*)
        [ -n "${OFFICIAL:-}" ] || { echo "set OFFICIAL to a checkout of facebookresearch/moco-v3" >&2; exit 1; }
        cmd=("$py" "$here/scripts/bench_resnet_official.py" --official "$OFFICIAL" --arch "$cfg" --batch "$batch" --image "$image") ;;
      mocov3:data)
        "$bin" bench data --dir "$here/runs/bench-data" --images "${IMAGES:-200}" --rounds 1 >/dev/null  # generate the files
        cmd=("$bin" bench data --dir "$here/runs/bench-data" --images "${IMAGES:-200}") ;;
      pytorch:data) cmd=("$py" "$here/scripts/bench_data_torch.py" --dir "$here/runs/bench-data") ;;
      mocov3:*) cmd=("$bin" bench step --config "$cfg") ;;
      *) cmd=("$py" "$here/scripts/bench_step_torch.py" --config "$cfg") ;;
    esac
    out=$(/usr/bin/time -v "${cmd[@]}" 2>&1)
    res=$(grep '^RESULT' <<<"$out")
    rss=$(grep 'Maximum resident set size' <<<"$out" | awk '{print $NF}')
    echo "round $r $res peak_rss_mib=$((rss / 1024))" | tee -a "$log"
  done
done
python3 - "$log" <<'PY'
import re, statistics, sys
rows = [l for l in open(sys.argv[1]) if "RESULT" in l]
peer = next(re.search(r"framework=(\S+)", l).group(1) for l in rows if "framework=mocov3 " not in l)
def med(fw, key):
    return statistics.median(float(re.search(key + r"=([\d.]+)", l).group(1)) for l in rows if f"framework={fw} " in l)
a, b = med("mocov3", "img_per_s"), med(peer, "img_per_s")
ma, mb = med("mocov3", "peak_rss_mib"), med(peer, "peak_rss_mib")
print(f"median img/s: mocov3 {a:.2f}, {peer} {b:.2f}, ratio {a / b:.2f}x; median peak RSS MiB: mocov3 {ma:.0f}, {peer} {mb:.0f}")
PY
rm -f "$log"
