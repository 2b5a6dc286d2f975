#!/usr/bin/env python3
"""Generate the ResNet step-parity fixtures under tests/fixtures/ by running the official MoCo v3 code.

    python scripts/make_resnet_parity_fixtures.py --official /path/to/moco-v3 [--out tests/fixtures] [--only NAME...]

The official `moco/builder.py` (MoCo_ResNet) and `moco/optimizer.py` (LARS) are imported from
the given path, never copied; the backbones are torchvision's, built as `main_moco.py` builds
them (`zero_init_residual=True`, `num_classes=mlp_dim`). Runs on the CPU with a
one-process gloo group (the official loss calls all_gather and puts its labels on CUDA;
`.cuda()` is made a no-op here).

The cases: `resnet18_cifar` (torchvision resnet18 with the CIFAR stem: a 3×3 stride-1 conv1 and
no max-pool; 16 px, 6 images per view) and `resnet50` (torchvision resnet50; 32 px, 8 images per
view), both with MoCo dim 32, mlp 64, T 1.0 (the ResNet recipe's), m 0.5, LARS lr 2.0 and weight
decay 0.05 (large, so that the trust ratio, the weight decay and the momentum buffer all move the
weights visibly).

A ResNet-50's state (two encoders, gradients, momentum buffers) is hundreds of MB, too much to
commit, so the fixture does not store it. Instead the state before the compared step is a
formula both sides compute exactly (`hashed`: splitmix64 of a key and the index gives a 24-bit
uniform u in [-1, 1), times a scale): the base encoder's and predictor's parameters from their
keys, the momentum encoder's from `momentum:<key>` (so the EMA visibly mixes two different
networks), every BN's running mean and variance and `num_batches_tracked` 3, and LARS's momentum
buffers `mu` (so the heavy-ball term matters); the views likewise. One step is compared, not a
chain: in float32 a chain of steps on these tiny batches drifts from its float64 counterpart by
percents within two steps (ReLU kinks and BatchNorms over a few values, amplified by the
update), so chained steps would compare rounding, not code.

The step runs twice, in float32 (the values compared) and in float64 (the same code, the model
and every input cast): how far the float32 result is from the float64 one, per tensor, tells the
test how much of a difference is rounding. In the ResNet-50 (its last stage normalises over 8
values) that distance is a median 0.07% of a gradient's largest value and up to 4%.

The file holds the loss (and `loss.err`, |float32 − float64|) and, for every tensor of the state
after the step (`final.<key>`), its gradients (`grad.<key>`) and LARS buffers after it
(`mu.<key>`): `<what>.idx.<key>` (up to SAMPLES element indices, drawn by the same hash),
`<what>.val.<key>` (the values there), `<what>.stat.<key>` = [L2 norm, Σ u_i·x_i with u the
hashed weights of `sign:<key>`, max |x|], computed in float64 over the whole tensor (a systematic
error anywhere shows in the projection), and `<what>.err.<key>` = [max_i |x32_i − x64_i|, the L2
norms' difference, the projections' difference].
"""
import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_parity_fixtures import write_safetensors  # noqa: E402

SAMPLES = 48
# The step: LARS lr and weight decay, momentum-encoder m, τ, MoCo dim and MLP width.
LR, WD, M, T, DIM, MLP_DIM = 2.0, 0.05, 0.5, 1.0, 32, 64
M64 = (1 << 64) - 1


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def splitmix64(z):
    """Vectorised over a uint64 array (numpy wraps on overflow, as the Rust side's wrapping ops)."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(name, n):
    """n float32 values in [-1, 1), exact multiples of 2^-23: element i is
    (splitmix64(fnv1a64(name) ^ splitmix64(i)) >> 40) · 2^-23 − 1."""
    with np.errstate(over="ignore"):
        i = np.arange(n, dtype=np.uint64)
        z = splitmix64(np.uint64(fnv1a64(name)) ^ splitmix64(i))
    return (z >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-23) - np.float32(1.0)


def hashed(key, shape, last_bn):
    """The starting value of the tensor `key` of the state_dict (parameters, BN buffers) or of
    `mu:<key>` (LARS's buffers): weights u·√(3/fan_in), BN weights 1 + u/4 but u/10 for the last
    BN of every residual block (`last_bn`: bn2 or bn3; as zero_init_residual, which sets them to
    0, keeps the residual branches small: with 1 + u/4 there, float32 gradients of a ResNet-50
    differ from float64 ones by 10% of their largest value), biases u/10, running
    means u/10, running variances 1 + u/2, `num_batches_tracked` 3, `mu` a thousandth of the
    weights' scale (the size of a LARS update) or u/100 for 1-d parameters. The momentum encoder's
    parameters hash `momentum:<key without the prefix>`, the base encoder's the key without it."""
    n = int(np.prod(shape))
    if key.endswith("num_batches_tracked"):
        return torch.tensor(3, dtype=torch.long)
    name = key
    for prefix, tag in (("base_encoder.", ""), ("momentum_encoder.", "momentum:")):
        if key.startswith(prefix) and not key.endswith(("running_mean", "running_var")):
            name = tag + key[len(prefix):]
    u = uniform(name, n)
    f = np.float32
    if key.startswith("mu:"):
        v = u * f(0.001 * np.sqrt(3.0 / (n // shape[0]))) if len(shape) > 1 else u * f(0.01)
    elif key.endswith("running_mean"):
        v = u * f(0.1)
    elif key.endswith("running_var"):
        v = f(1.0) + u * f(0.5)
    elif len(shape) > 1:
        v = u * f(np.sqrt(3.0 / (n // shape[0])))
    elif key.endswith(f"{last_bn}.weight") and ".layer" in "." + name.split(":")[-1]:
        v = u * f(0.1)
    elif key.endswith(".weight"):
        v = f(1.0) + u * f(0.25)
    else:
        v = u * f(0.1)
    return torch.from_numpy(v.reshape(shape))


def sample(what, key, t, t64):
    """`<what>.idx/val/stat/err.<key>` of tensor t, with t64 the same tensor from the float64 run
    (see the module doc)."""
    x = t.detach().reshape(-1).to(torch.float64).numpy()
    x64 = t64.detach().reshape(-1).to(torch.float64).numpy()
    n = x.size
    if n <= SAMPLES:
        idx = np.arange(n)
    else:
        with np.errstate(over="ignore"):
            z = splitmix64(np.uint64(fnv1a64("sample:" + key)) ^ splitmix64(np.arange(SAMPLES, dtype=np.uint64)))
        idx = np.unique((z % np.uint64(n)).astype(np.int64))
    u = uniform("sign:" + key, n).astype(np.float64)

    def stat(v):
        return np.array([np.sqrt((v * v).sum()), (u * v).sum(), np.abs(v).max() if n else 0.0])

    s32, s64 = stat(x), stat(x64)
    err = [np.abs(x - x64).max() if n else 0.0, abs(s32[0] - s64[0]), abs(s32[1] - s64[1])]
    return {
        f"{what}.idx.{key}": torch.tensor(idx, dtype=torch.float32),
        f"{what}.val.{key}": torch.from_numpy(x[idx].astype(np.float32)),
        f"{what}.stat.{key}": torch.from_numpy(s32.astype(np.float32)),
        f"{what}.err.{key}": torch.tensor(err, dtype=torch.float32),
    }


def step(arch, dtype, img, n, last_bn):
    """One official step from the hashed state in `dtype`: (loss, state_dict, gradients, LARS
    buffers after it), keyed by the state_dict's names."""
    import moco.builder  # noqa: E402  (official)
    import moco.optimizer  # noqa: E402  (official)

    model = moco.builder.MoCo_ResNet(arch, dim=DIM, mlp_dim=MLP_DIM, T=T).to(dtype)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(hashed(k, tuple(v.shape), last_bn))
    opt = moco.optimizer.LARS(model.parameters(), LR, weight_decay=WD, momentum=0.9)
    names = {id(p): k for k, p in model.named_parameters()}
    for p in model.parameters():
        if p.requires_grad:
            opt.state[p]["mu"] = hashed("mu:" + names[id(p)], tuple(p.shape), last_bn).to(dtype)
    x1 = torch.from_numpy(uniform("x1", n * 3 * img * img).reshape(n, 3, img, img)).to(dtype)
    x2 = torch.from_numpy(uniform("x2", n * 3 * img * img).reshape(n, 3, img, img)).to(dtype)
    loss = model(x1, x2, M)
    opt.zero_grad()
    loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    opt.step()
    mus = {names[id(p)]: st["mu"] for p, st in opt.state.items()}
    return loss.item(), dict(model.state_dict()), grads, mus


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", required=True, help="path to a checkout of facebookresearch/moco-v3")
    ap.add_argument("--only", nargs="*", help="generate only these cases (resnet18_cifar, resnet50)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures"))
    a = ap.parse_args()
    sys.path.insert(0, a.official)
    import torchvision.models as tvm

    torch.Tensor.cuda = lambda self, *args, **kw: self  # CPU run of the official loss
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:29518", rank=0, world_size=1)
    torch.set_num_threads(2)
    os.makedirs(a.out, exist_ok=True)

    def resnet18_cifar(num_classes):
        net = tvm.resnet18(zero_init_residual=True, num_classes=num_classes)
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        return net

    def resnet50(num_classes):
        return tvm.resnet50(zero_init_residual=True, num_classes=num_classes)

    cases = [("resnet18_cifar", resnet18_cifar, 18, True, 16, 6), ("resnet50", resnet50, 50, False, 32, 8)]
    for name, arch, depth, cifar, img, n in cases:
        if a.only and name not in a.only:
            continue
        last_bn = "bn3" if depth == 50 else "bn2"
        runs = {dtype: step(arch, dtype, img, n, last_bn) for dtype in (torch.float32, torch.float64)}
        (loss, state, grads, mus), (loss64, state64, grads64, mus64) = runs[torch.float32], runs[torch.float64]
        print(f"{name}: loss {loss:.8f} (float64: {loss64:.8f})", flush=True)
        tensors = {"loss": torch.tensor([loss]), "loss.err": torch.tensor([abs(loss - loss64)])}
        for k, v in state.items():
            tensors.update(sample("final", k, v, state64[k]))
        for k, g in grads.items():
            tensors.update(sample("grad", k, g, grads64[k]))
        for k, mu in mus.items():
            tensors.update(sample("mu", k, mu, mus64[k]))
        meta = dict(depth=depth, cifar=cifar, img=img, batch=n, lr=LR, wd=WD, m=M, t=T,
                    dim=DIM, mlp_dim=MLP_DIM, samples=SAMPLES, torch=torch.__version__)
        path = os.path.join(a.out, f"parity_{name}.safetensors")
        write_safetensors(path, tensors, meta)
        print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
