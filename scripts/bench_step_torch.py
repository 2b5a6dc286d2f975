#!/usr/bin/env python3
"""PyTorch peer of `mocov3 bench step`: the same MoCo v3 ViT step (bench-step C1/C2), fp32, CPU.

The model follows the official moco-v3 code (vits.py on timm 0.4.9, moco/builder.py): pre-norm
ViT blocks (LayerNorm eps 1e-6, qkv bias, GELU MLP ratio 4), fixed 2D sin-cos position
embedding, cls token, projector 3 layers / predictor 2 layers with BatchNorm, the symmetric 2τ
contrastive loss, AdamW, and the momentum update inside forward before the keys. Written here
from those descriptions; it imports nothing from the official repository.

    python scripts/bench_step_torch.py --config C1 [--threads 2] [--warmup 2] [--steps 18]

Prints: RESULT framework=pytorch config=C1 img_per_s=... step_ms_median=... loss_first=... loss_last=...
"""
import argparse
import copy
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    "C1": dict(img=32, patch=4, dim=192, depth=12, heads=3, hidden=1024, out=256, batch=64),
    "C2": dict(img=224, patch=16, dim=384, depth=12, heads=12, hidden=4096, out=256, batch=8),
}


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def sincos_2d(grid, dim, temperature=10000.0):
    gw = torch.arange(grid, dtype=torch.float32)
    gh = torch.arange(grid, dtype=torch.float32)
    gw, gh = torch.meshgrid(gw, gh, indexing="ij")
    pd = dim // 4
    omega = 1.0 / (temperature ** (torch.arange(pd, dtype=torch.float32) / pd))
    ow = torch.einsum("m,d->md", gw.flatten(), omega)
    oh = torch.einsum("m,d->md", gh.flatten(), omega)
    pe = torch.cat([torch.sin(ow), torch.cos(ow), torch.sin(oh), torch.cos(oh)], dim=1)[None]
    return torch.cat([torch.zeros(1, 1, dim), pe], dim=1)


class ViT(nn.Module):
    def __init__(self, img, patch, dim, depth, heads):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(sincos_2d(img // patch, dim), requires_grad=False)
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                if "qkv" in name:
                    val = math.sqrt(6.0 / float(m.weight.shape[0] // 3 + m.weight.shape[1]))
                    nn.init.uniform_(m.weight, -val, val)
                else:
                    nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.cls_token, std=1e-6)
        val = math.sqrt(6.0 / float(3 * patch * patch + dim))
        nn.init.uniform_(self.patch_embed.weight, -val, val)
        nn.init.zeros_(self.patch_embed.bias)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return x[:, 0]


def build_mlp(num_layers, d_in, hidden, d_out, last_bn=True):
    layers = []
    for l in range(num_layers):
        d1 = d_in if l == 0 else hidden
        d2 = d_out if l == num_layers - 1 else hidden
        layers.append(nn.Linear(d1, d2, bias=False))
        if l < num_layers - 1:
            layers += [nn.BatchNorm1d(d2), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(d2, affine=False))
    return nn.Sequential(*layers)


class MoCoV3(nn.Module):
    def __init__(self, c, T=0.2):
        super().__init__()
        self.T = T
        self.base = nn.Sequential(ViT(c["img"], c["patch"], c["dim"], c["depth"], c["heads"]),
                                  build_mlp(3, c["dim"], c["hidden"], c["out"]))
        self.momentum = copy.deepcopy(self.base)
        for p in self.momentum.parameters():
            p.requires_grad = False
        self.predictor = build_mlp(2, c["out"], c["hidden"], c["out"])

    @torch.no_grad()
    def momentum_update(self, m):
        for pb, pm in zip(self.base.parameters(), self.momentum.parameters()):
            pm.data = pm.data * m + pb.data * (1.0 - m)

    def ctr(self, q, k):
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = q @ k.t() / self.T
        labels = torch.arange(q.shape[0])
        return F.cross_entropy(logits, labels) * (2 * self.T)

    def forward(self, x1, x2, m):
        q1, q2 = self.predictor(self.base(x1)), self.predictor(self.base(x2))
        with torch.no_grad():
            self.momentum_update(m)
            k1, k2 = self.momentum(x1), self.momentum(x2)
        return self.ctr(q1, k2) + self.ctr(q2, k1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="C1", choices=sorted(CONFIGS))
    ap.add_argument("--threads", type=int, default=0, help="0 = one per core")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 18 for C1, 5 for C2)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    c = CONFIGS[a.config]
    n = c["batch"]
    timed = a.steps if a.steps is not None else (18 if a.config == "C1" else 5)
    model = MoCoV3(c)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                            lr=1.5e-4 * n / 256, weight_decay=0.1)
    x = torch.rand(2, n, 3, c["img"], c["img"])
    print(f"bench step {a.config} (pytorch {torch.__version__}): batch {n}, {a.warmup} warm-up + {timed} timed, "
          f"{torch.get_num_threads()} threads", file=sys.stderr)
    time_steps(lambda: model(x[0], x[1], 0.99), opt, n, a.warmup, timed, "pytorch", a.config)


def time_steps(forward, opt, n, warmup, timed, framework, config, median=statistics.median_low):
    """Run `warmup + timed` training steps (forward() gives the loss; backward; opt.step()), time
    each, and print the RESULT line of the bench-step protocol from the median timed step."""
    times, losses = [], []
    for i in range(warmup + timed):
        t0 = time.perf_counter()
        loss = forward()
        opt.zero_grad()
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if i >= warmup:
            times.append(dt)
        print(f"  step {i:2d}: {dt * 1e3:8.1f} ms  loss {losses[-1]:.4f}", file=sys.stderr)
    med = median(times)
    print(f"RESULT framework={framework} config={config} img_per_s={n / med:.3f} step_ms_median={med * 1e3:.1f} "
          f"loss_first={losses[0]:.4f} loss_last={losses[-1]:.4f}")


if __name__ == "__main__":
    main()
