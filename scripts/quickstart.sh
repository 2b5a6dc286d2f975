#!/usr/bin/env bash
# Quickstart: make sure Fashion-MNIST is on the machine (Debian package dataset-fashion-mnist),
# build, pre-train the small ViT preset on it, then score it (kNN and linear probe, beside the
# raw-pixel baselines) and draw its curves. Extra arguments go to `mocov3 quickstart`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -z "${MOCOV3_DATA:-}" ]; then
  echo "Fashion-MNIST not found: installing the Debian package dataset-fashion-mnist" >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist;
  else sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; fi
fi
cargo build --release
exec ./target/release/mocov3 quickstart --out runs/quickstart "$@"
