#!/usr/bin/env python3
"""Generate the step-parity fixtures under tests/fixtures/ by running the official MoCo v3 code.

    python scripts/make_parity_fixtures.py --official /path/to/moco-v3 [--out tests/fixtures] [--only NAME...]

The official repository (vits.py, moco/builder.py) is imported from the given path, never
copied. Needs torch and timm==0.4.9. Runs on the CPU in float32 with a one-process gloo group
(the official loss calls all_gather and puts its labels on CUDA; `.cuda()` is made a no-op here).

For each case a tiny ViT (img 32, patch 8, dim 64, depth 2, heads 4; MoCo dim 32, mlp 128,
T 0.2, batch 8 per view) is built by the official constructors and trained with AdamW as
main_moco.py does (loss.backward(); optimizer.step()): WARMUP steps first, so that the momentum
encoder, the BatchNorm buffers and the AdamW moments differ from their initial values, then the
compared step. The file holds: `init.<key>` (the state_dict before the compared step),
`adam.exp_avg.<key>`, `adam.exp_avg_sq.<key>` (AdamW moments then; `adam_step` in the metadata),
`x1`, `x2` (the compared step's views), `loss`, `grad.<key>` (its gradients) and `final.<key>`
(the state_dict after it), plus the hyper-parameters as metadata. Comparing one step from a saved
state keeps the comparison exact: chaining steps lets AdamW amplify float rounding (any gradient
at noise level becomes a ±lr step), which makes later steps incomparable.
The cases: sin-cos PE; sin-cos PE with stop_grad_conv1; learned PE (trunc-normal 0.02, put on
both encoders before training, as vits.py has no such option); the conv stem of vit_conv_*
(`vits.ConvStem`, which asserts patch 16: img 32, so four stride-2 stages down to a 2×2 grid).
"""
import argparse
import copy
import json
import os
import struct
import sys
from functools import partial

import torch
import torch.nn as nn

WARMUP = 2
N = 8


def write_safetensors(path, tensors, meta):
    header, blobs, off = {}, [], 0
    for k in sorted(tensors):
        t = tensors[k].detach().to(torch.float32).contiguous().cpu()
        b = t.numpy().tobytes()
        header[k] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {k: str(v) for k, v in meta.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def views_away_from_kinks(model, m, margin=1e-4):
    """Views for the compared step such that no ReLU input lies within `margin` of zero: there,
    float rounding alone decides the branch and the gradients of two correct implementations
    differ at O(1) in whole rows."""
    for _ in range(100):
        x1, x2 = torch.randn(N, 3, 32, 32), torch.randn(N, 3, 32, 32)
        probe = copy.deepcopy(model)
        closest = [float("inf")]

        def hook(mod, inp):
            closest[0] = min(closest[0], inp[0].abs().min().item())

        for mod in probe.modules():
            if isinstance(mod, nn.ReLU):
                mod.register_forward_pre_hook(hook)
        with torch.no_grad():
            probe(x1, x2, m)
        if closest[0] > margin:
            return x1, x2
    raise SystemExit("no views found whose ReLU inputs all stay clear of zero")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", required=True, help="path to a checkout of facebookresearch/moco-v3")
    ap.add_argument("--warmup", type=int, default=WARMUP)
    ap.add_argument("--only", nargs="*", help="generate only these cases (sincos, stopgrad, learned, convstem)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    a = ap.parse_args()
    sys.path.insert(0, a.official)
    import vits  # noqa: E402  (official)
    import moco.builder  # noqa: E402  (official)
    from timm.models.layers import trunc_normal_

    torch.Tensor.cuda = lambda self, *args, **kw: self  # CPU run of the official loss
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:29517", rank=0, world_size=1)
    torch.set_num_threads(1)
    os.makedirs(a.out, exist_ok=True)

    cases = [
        ("sincos", dict(stop_grad_conv1=False, patch_size=8), False),
        ("stopgrad", dict(stop_grad_conv1=True, patch_size=8), False),
        ("learned", dict(stop_grad_conv1=False, patch_size=8), True),
        ("convstem", dict(stop_grad_conv1=False, patch_size=16, embed_layer=vits.ConvStem), False),
    ]
    for name, kw, learned in cases:
        if a.only and name not in a.only:
            continue
        torch.manual_seed(0)
        arch = partial(vits.VisionTransformerMoCo, img_size=32, embed_dim=64, depth=2, num_heads=4,
                       mlp_ratio=4, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6), **kw)
        model = moco.builder.MoCo_ViT(arch, dim=32, mlp_dim=128, T=0.2)
        if learned:
            pe = torch.zeros_like(model.base_encoder.pos_embed)
            trunc_normal_(pe, std=0.02)
            model.base_encoder.pos_embed = nn.Parameter(pe.clone())
            model.momentum_encoder.pos_embed = nn.Parameter(pe.clone(), requires_grad=False)
        # A low momentum and a large weight decay make the step's every part visible.
        lr, wd, m = 1e-3, 5.0, 0.5
        opt = torch.optim.AdamW(model.parameters(), lr, weight_decay=wd)
        def step(x1, x2):
            loss = model(x1, x2, m)
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss.item()

        for _ in range(a.warmup):
            step(torch.randn(N, 3, 32, 32), torch.randn(N, 3, 32, 32))
        tensors = {f"init.{k}": v.clone() for k, v in model.state_dict().items()}
        names = {id(p): k for k, p in model.named_parameters()}
        adam_step = 0
        for p, st in opt.state.items():
            tensors[f"adam.exp_avg.{names[id(p)]}"] = st["exp_avg"].clone()
            tensors[f"adam.exp_avg_sq.{names[id(p)]}"] = st["exp_avg_sq"].clone()
            adam_step = int(st["step"])
        # The conv stem's BN → ReLU stages hold ~60k ReLU inputs per step, normalised to unit scale:
        # a margin of 1e-4 is almost never clear; 1e-5 is still 10× the rounding differences.
        x1, x2 = views_away_from_kinks(model, m, margin=1e-5 if "embed_layer" in kw else 1e-4)
        tensors["x1"], tensors["x2"] = x1, x2
        loss = step(x1, x2)
        for k, p in model.named_parameters():
            if p.grad is not None:
                tensors[f"grad.{k}"] = p.grad.clone()
        tensors.update({f"final.{k}": v.clone() for k, v in model.state_dict().items()})
        tensors["loss"] = torch.tensor([loss])
        meta = dict(lr=lr, wd=wd, m=m, t=0.2, adam_step=adam_step, batch=N, learned_pe=learned,
                    stop_grad_conv1=kw["stop_grad_conv1"], conv_stem="embed_layer" in kw, torch=torch.__version__)
        path = os.path.join(a.out, f"parity_{name}.safetensors")
        write_safetensors(path, tensors, meta)
        print(f"{path}: loss {loss}")


if __name__ == "__main__":
    main()
