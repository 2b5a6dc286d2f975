#!/usr/bin/env python3
"""Show that a checkpoint written by `mocov3 pretrain` and converted with
`mocov3 convert CKPT --to official --out OUT.pth.tar` loads into the official MoCo v3 model with
strict=True (and that `--to deit` loads into the official ViT backbone the way DeiT does).

    python scripts/check_official_load.py --official /path/to/moco-v3 --checkpoint OUT.pth.tar \\
        --img 16 --patch 4 --dim 32 --depth 2 --heads 2 --in-chans 1 --mlp-dim 64 --out-dim 32 [--deit DEIT.pth]
    python scripts/check_official_load.py --official /path/to/moco-v3 --checkpoint OUT.pth.tar \\
        --arch resnet18 [--cifar] --in-chans 1 --mlp-dim 64 --out-dim 32

ResNets are torchvision's with zero_init_residual, in MoCo_ResNet; `--cifar` swaps in the 3x3
stride-1 first convolution and drops the max-pool (the CIFAR variant mocov3 offers; the official
code has no such option), `--in-chans` replaces the first convolution's input channels.
"""
import argparse
import sys
from functools import partial

import torch
import torch.nn as nn

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--official", required=True)
ap.add_argument("--checkpoint", required=True)
ap.add_argument("--deit")
ap.add_argument("--arch", default="vit")
ap.add_argument("--cifar", action="store_true")
for k, d in [("img", 224), ("patch", 16), ("dim", 384), ("depth", 12), ("heads", 12), ("in-chans", 3),
             ("mlp-dim", 4096), ("out-dim", 256)]:
    ap.add_argument(f"--{k}", type=int, default=d)
a = ap.parse_args()
sys.path.insert(0, a.official)
import vits  # noqa: E402
import moco.builder  # noqa: E402

def resnet(num_classes):
    import torchvision.models as tvm
    net = tvm.__dict__[a.arch](num_classes=num_classes, zero_init_residual=True)
    if a.cifar or a.in_chans != 3:
        k, s, p = (3, 1, 1) if a.cifar else (7, 2, 3)
        net.conv1 = nn.Conv2d(a.in_chans, 64, k, s, p, bias=False)
    if a.cifar:
        net.maxpool = nn.Identity()
    return net


arch = partial(vits.VisionTransformerMoCo, img_size=a.img, patch_size=a.patch, in_chans=a.in_chans, embed_dim=a.dim,
               depth=a.depth, num_heads=a.heads, mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
if a.arch.startswith("resnet"):
    model = moco.builder.MoCo_ResNet(resnet, dim=a.out_dim, mlp_dim=a.mlp_dim, T=1.0)
else:
    model = moco.builder.MoCo_ViT(arch, dim=a.out_dim, mlp_dim=a.mlp_dim, T=0.2)
ckpt = torch.load(a.checkpoint, map_location="cpu", weights_only=False)
sd = {k[len("module."):]: v for k, v in ckpt["state_dict"].items()}
result = model.load_state_dict(sd, strict=True)
print(f"official {type(model).__name__}.load_state_dict(strict=True): {result}; epoch {ckpt['epoch']}, arch {ckpt['arch']}, "
      f"{len(sd)} tensors")
if "optimizer" in ckpt:
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    opt.load_state_dict(ckpt["optimizer"])
    print(f"torch.optim.AdamW.load_state_dict: {len(opt.state)} parameter states, step "
          f"{float(next(iter(opt.state.values()))['step'])}")
if a.deit:
    d = torch.load(a.deit, map_location="cpu", weights_only=False)["model"]
    vit = arch(num_classes=10)
    missing, unexpected = vit.load_state_dict(d, strict=False)
    assert set(missing) == {"head.weight", "head.bias"} and not unexpected, (missing, unexpected)
    print(f"DeiT layout: backbone loads with only the new head missing: {missing}")
