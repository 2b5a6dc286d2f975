#!/usr/bin/env python3
"""torchvision + PIL running the official MoCo v3 two-view augmentation (main_moco.py's
augmentation1 / augmentation2, written out here) on the JPEG files `mocov3 bench data` generated:
decode once per image (ImageFolder's PIL loader, RGB), then both views, in one process and one
thread, so the rate is per core.

    python scripts/bench_data_torch.py --dir runs/bench-data [--size 224] [--rounds 2]

Prints: RESULT framework=torchvision bench=data images=... size=... threads=1 two_view_img_per_s=... per_core=...
"""
import argparse
import glob
import os
import random
import time

import torch
import torchvision.transforms as T
from PIL import Image, ImageFilter, ImageOps


class GaussianBlur:
    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, x):
        return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


class Solarize:
    def __call__(self, x):
        return ImageOps.solarize(x)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="runs/bench-data")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(1)
    norm = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    jitter = T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8)
    crop = T.RandomResizedCrop(a.size, scale=(0.08, 1.0))
    aug1 = T.Compose([crop, jitter, T.RandomGrayscale(p=0.2), T.RandomApply([GaussianBlur()], p=1.0),
                      T.RandomHorizontalFlip(), T.ToTensor(), norm])
    aug2 = T.Compose([crop, jitter, T.RandomGrayscale(p=0.2), T.RandomApply([GaussianBlur()], p=0.1),
                      T.RandomApply([Solarize()], p=0.2), T.RandomHorizontalFlip(), T.ToTensor(), norm])
    files = sorted(glob.glob(os.path.join(a.dir, "bench", "*.jpg")))
    if not files:
        raise SystemExit(f"no JPEG files under {a.dir}/bench: run `mocov3 bench data --dir {a.dir}` first")

    def one_pass():
        for f in files:
            with open(f, "rb") as fh:
                img = Image.open(fh).convert("RGB")
            aug1(img), aug2(img)

    one_pass()  # warm the file cache, untimed
    t0 = time.perf_counter()
    for _ in range(a.rounds):
        one_pass()
    secs = time.perf_counter() - t0
    n = len(files) * a.rounds
    print(f"RESULT framework=torchvision bench=data images={n} size={a.size} threads=1 "
          f"two_view_img_per_s={n / secs:.1f} per_core={n / secs:.1f}")


if __name__ == "__main__":
    main()
