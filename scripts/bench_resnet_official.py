#!/usr/bin/env python3
"""The official MoCo v3 ResNet step, timed: the peer of `mocov3 bench step --arch resnet50`.

Imports the official code by path (moco/builder.py's MoCo_ResNet, moco/optimizer.py's LARS) with
torchvision's ResNet(zero_init_residual=True), as main_moco.py builds it: projector 2048-4096-256,
predictor 256-4096-256, T 1.0, LARS (lr 0.6 x batch / 256, wd 1e-6, momentum 0.9), m 0.99. fp32 on
CPU (main_moco.py's AMP needs CUDA); one process, so its all_gather runs on a one-rank gloo group and
the loss's `.cuda()` is made a no-op. Random images in [0, 1), one fixed batch.

    python scripts/bench_resnet_official.py --official PATH/TO/moco-v3 [--arch resnet50] [--batch 8]
        [--image 224] [--threads 2] [--warmup 2] [--steps 5]

--arch resnet18_cifar: torchvision's resnet18 with the CIFAR stem (run it with --batch 32 --image 32,
as `mocov3 bench step --arch resnet18_cifar`).

Prints: RESULT framework=official config=resnet50 img_per_s=... step_ms_median=... loss_first=... loss_last=...
"""
import argparse
import os
import statistics
import sys
from functools import partial

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_step_torch import time_steps  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--official", required=True, help="checkout of facebookresearch/moco-v3")
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--image", type=int, default=224)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    sys.path.insert(0, a.official)
    import moco.builder
    import moco.optimizer
    import torchvision.models as tvm

    torch.Tensor.cuda = lambda self, *args, **kw: self
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:29531", rank=0, world_size=1)
    torch.manual_seed(0)
    if a.arch == "resnet18_cifar":
        # Not in the official code: torchvision's resnet18 with the CIFAR stem (a 3x3 stride-1
        # conv1, no max-pool), as mocov3's `cifar` ResNets and the parity fixtures build it.
        def arch(**kw):
            net = tvm.resnet18(zero_init_residual=True, **kw)
            net.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = torch.nn.Identity()
            return net
    else:
        arch = partial(tvm.__dict__[a.arch], zero_init_residual=True)
    model = moco.builder.MoCo_ResNet(arch, 256, 4096, 1.0)
    model.train()
    n = a.batch
    opt = moco.optimizer.LARS(model.parameters(), 0.6 * n / 256, weight_decay=1e-6, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    x1 = torch.rand(n, 3, a.image, a.image, generator=g)
    x2 = torch.rand(n, 3, a.image, a.image, generator=g)
    time_steps(lambda: model(x1, x2, 0.99), opt, n, a.warmup, a.steps, "official", a.arch, statistics.median)


if __name__ == "__main__":
    main()
