#!/usr/bin/env python3
"""Generate the checkpoint-reading fixtures under tests/fixtures/: a checkpoint in the layout of
the official main_moco.py (`epoch`, `arch`, `state_dict` with the DDP `module.` prefix,
`optimizer` = AdamW state after one step, `scaler`), saved by torch.save in the zip format and in
the legacy format, and the same tensors as safetensors for comparison.

    python scripts/make_checkpoint_fixtures.py --official /path/to/moco-v3 [--out tests/fixtures]

A very small ViT (img 16, patch 8, dim 16, depth 1, heads 2; MoCo dim 8, mlp 32) built by the
official constructors, imported from the given checkout.
"""
import argparse
import os
import sys
from functools import partial

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(__file__))
from make_parity_fixtures import write_safetensors  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", required=True)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    a = ap.parse_args()
    sys.path.insert(0, a.official)
    import vits  # noqa: E402
    import moco.builder  # noqa: E402

    torch.Tensor.cuda = lambda self, *args, **kw: self
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:29519", rank=0, world_size=1)
    torch.manual_seed(0)
    arch = partial(vits.VisionTransformerMoCo, img_size=16, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                   mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), stop_grad_conv1=True)
    model = moco.builder.MoCo_ViT(arch, dim=8, mlp_dim=32, T=0.2)
    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.1)
    loss = model(torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16), 0.99)
    opt.zero_grad()
    loss.backward()
    opt.step()
    sd = {"module." + k: v for k, v in model.state_dict().items()}
    ckpt = {"epoch": 3, "arch": "vit_test", "state_dict": sd, "optimizer": opt.state_dict(),
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                       "_growth_tracker": 0}}
    os.makedirs(a.out, exist_ok=True)
    torch.save(ckpt, os.path.join(a.out, "official_zip.pth.tar"))
    torch.save(ckpt, os.path.join(a.out, "official_legacy.pth.tar"), _use_new_zipfile_serialization=False)
    expect = {f"state_dict.{k}": v for k, v in sd.items()}
    names = {i: k for i, (k, _) in enumerate(model.named_parameters())}
    for i, st in opt.state_dict()["state"].items():
        expect[f"optimizer.exp_avg.{names[i]}"] = st["exp_avg"]
        expect[f"optimizer.exp_avg_sq.{names[i]}"] = st["exp_avg_sq"]
    write_safetensors(os.path.join(a.out, "official_expected.safetensors"), expect,
                      {"epoch": 3, "adam_step": int(next(iter(opt.state_dict()["state"].values()))["step"])})
    print("wrote", a.out, "keys:", len(sd), "optimizer states:", len(opt.state_dict()["state"]))


if __name__ == "__main__":
    main()
