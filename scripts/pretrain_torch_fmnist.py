#!/usr/bin/env python3
"""PyTorch peer of `mocov3 pretrain --preset fashion-mnist` for end-to-end timing: the same
model (bench_step_torch.py's ViT written from the official code, 192-d x 6 blocks, 28 px, patch 7,
1 channel, stop_grad_conv1, projector/predictor 1024 -> 256), the same schedule (AdamW, base lr
1.5e-4 x batch/256, wd 0.1, warm-up 1 of 10 epochs, cosine momentum from 0.99, T 0.2) and the same
two-view augmentation (RandomResizedCrop(28, scale=(0.2, 1)) + horizontal flip, normalised with
the dataset's mean and std), on Fashion-MNIST's 60k training images, batch 256, drop_last, with a
DataLoader of worker processes. Runs one epoch and prints the wall time and images per second.

    python scripts/pretrain_torch_fmnist.py [--data /usr/share/datasets/fashion-mnist] [--workers 2]
        [--threads 2] [--max-steps N]
"""
import argparse
import gzip
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torchvision import transforms

sys.path.insert(0, os.path.dirname(__file__))
import bench_step_torch as peer  # noqa: E402


def read_idx(path):
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    nd = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(nd)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * nd).reshape(dims)


class TwoViews(torch.utils.data.Dataset):
    def __init__(self, images, mean, std):
        self.images = images
        self.t = transforms.Compose([
            transforms.RandomResizedCrop(28, scale=(0.2, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([mean], [std]),
        ])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        img = Image.fromarray(self.images[i], mode="L")
        return self.t(img), self.t(img)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    images = read_idx(os.path.join(a.data, "train-images-idx3-ubyte.gz"))
    mean, std = float(images.mean() / 255.0), float(images.std() / 255.0)
    loader = torch.utils.data.DataLoader(TwoViews(images, mean, std), batch_size=256, shuffle=True,
                                         num_workers=a.workers, drop_last=True, persistent_workers=False)
    c = dict(img=28, patch=7, dim=192, depth=6, heads=3, hidden=1024, out=256, batch=256)
    model = peer.MoCoV3(c)
    for vit in (model.base[0], model.momentum[0]):
        vit.patch_embed = nn.Conv2d(1, 192, kernel_size=7, stride=7)
    model.momentum[0].patch_embed.load_state_dict(model.base[0].patch_embed.state_dict())
    for p in model.base[0].patch_embed.parameters():
        p.requires_grad = False  # stop_grad_conv1
    for p in model.momentum.parameters():
        p.requires_grad = False
    epochs, warmup, base_lr = 10, 1, 1.5e-4 * 256 / 256
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], base_lr, weight_decay=0.1)
    iters = len(loader)
    steps = min(iters, a.max_steps or iters)
    t0 = time.perf_counter()
    done = 0
    for i, (x1, x2) in enumerate(loader):
        if i >= steps:
            break
        e = i / iters
        lr = base_lr * e / warmup if e < warmup else base_lr * 0.5 * (1 + math.cos(math.pi * (e - warmup) / (epochs - warmup)))
        for g in opt.param_groups:
            g["lr"] = lr
        m = 1 - 0.5 * (1 + math.cos(math.pi * e / epochs)) * (1 - 0.99)
        loss = model(x1, x2, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += x1.shape[0]
        if i % 20 == 0:
            print(f"step {i}/{steps} loss {loss.item():.4f} {done / (time.perf_counter() - t0):.1f} img/s", file=sys.stderr)
    dt = time.perf_counter() - t0
    print(f"RESULT framework=pytorch workload=fashion-mnist-epoch steps={steps} seconds={dt:.1f} img_per_s={done / dt:.2f} loss_last={loss.item():.4f}")


if __name__ == "__main__":
    main()
