#!/usr/bin/env python3
"""The official MoCo v3 training step under AMP on a GPU: the peer of `mocov3 bench step --device
cuda` (scripts/gpu_check.sh runs both on the same GPU in one run).

    python scripts/bench_official_amp.py --official /path/to/moco-v3 [--batches 128,256] [--steps 20]

The official code (vits.py, moco/builder.py) is imported from the given checkout, unmodified, and
stepped as main_moco.py does: `MoCo_ViT(partial(vits.vit_small, stop_grad_conv1=True), 256,
4096, 0.2)`, AdamW (lr 1.5e-4·batch/256, weight decay 0.1), `torch.cuda.amp.autocast` (fp16,
the official default; `--amp bf16` for bf16) with a GradScaler, the momentum update inside
forward. A one-process process group is made for its all_gather. ViT-S/16 at 224 px on random
images already on the GPU (no data loading on either side).

If the official code cannot be imported or built (e.g. its timm 0.4.9 API is missing from the
installed timm), says why and steps the replica of scripts/bench_step_torch.py instead, marked
`framework=replica` in the RESULT line.

Prints per batch: RESULT framework=official-amp batch=... img_per_s=... step_ms_median=...
and once: RESULT framework=pytorch gemm dtype=bf16 n=8192 tflops=... (torch.mm's rate).
"""
import argparse
import os
import statistics
import sys
import time
import traceback
from functools import partial

import torch
import torch.nn.functional as F


def official_model(path):
    sys.path.insert(0, path)
    import vits  # noqa: E402  (official)
    import moco.builder  # noqa: E402  (official)

    return moco.builder.MoCo_ViT(partial(vits.vit_small, stop_grad_conv1=True), 256, 4096, 0.2)


def replica_model(device):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_step_torch as b  # noqa: E402

    class Replica(b.MoCoV3):
        def ctr(self, q, k):
            q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
            logits = q @ k.t() / self.T
            labels = torch.arange(q.shape[0], device=q.device)
            return F.cross_entropy(logits, labels) * (2 * self.T)

    return Replica(b.CONFIGS["C2"])


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(model, device, batch, warmup, steps, amp):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1.5e-4 * batch / 256,
                            weight_decay=0.1)
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    scaler = torch.cuda.amp.GradScaler(enabled=device.type == "cuda" and amp == "fp16")
    x = torch.rand(2, batch, 3, 224, 224, device=device)
    times, losses = [], []
    for i in range(warmup + steps):
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=dtype):
            loss = model(x[0], x[1], 0.99)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
        sync(device)
        dt = time.perf_counter() - t0
        if i >= warmup:
            times.append(dt)
        print(f"  batch {batch} step {i:2d}: {dt * 1e3:8.1f} ms  loss {losses[-1]:.4f}", file=sys.stderr)
    med = statistics.median(times)
    mem = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return batch / med, med, losses, mem


def gemm_rate(device, n=8192, reps=10):
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    torch.mm(a, b)
    ts = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        ts.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(ts) / 1e12


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--official", help="path to a checkout of facebookresearch/moco-v3")
    ap.add_argument("--batches", default="128,256", help="comma-separated batch sizes")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--amp", default="fp16", choices=["fp16", "bf16"], help="autocast dtype (official: fp16)")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    ap.add_argument("--gemm-n", type=int, default=8192, help="size of the bf16 torch.mm rate (0: skip)")
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    if device.type == "cpu":
        torch.Tensor.cuda = lambda self, *args, **kw: self  # the official loss puts its labels on CUDA
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        print(f"{torch.cuda.get_device_name()} torch {torch.__version__}", file=sys.stderr)
    framework = "official-amp"
    try:
        if not a.official:
            raise RuntimeError("no --official checkout given")
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                                 init_method="tcp://127.0.0.1:29531", rank=0, world_size=1)
        make = lambda: official_model(a.official)  # noqa: E731
        make()
    except Exception as e:  # the official code or its timm API missing: say so, use the replica
        traceback.print_exc()
        print(f"the official code could not be used ({e}); timing the replica of bench_step_torch.py",
              file=sys.stderr)
        framework = "replica"
        make = lambda: replica_model(device)  # noqa: E731
    for batch in [int(b) for b in a.batches.split(",") if b]:
        model = make().to(device)
        try:
            ips, med, losses, mem = bench(model, device, batch, a.warmup, a.steps, a.amp)
        except torch.cuda.OutOfMemoryError:
            print(f"RESULT framework={framework} batch={batch} out_of_memory", flush=True)
            continue
        finally:
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(f"RESULT framework={framework} amp={a.amp} batch={batch} img_per_s={ips:.1f} step_ms_median={med * 1e3:.1f} "
              f"loss_first={losses[0]:.4f} loss_last={losses[-1]:.4f} peak_mib={mem:.0f}", flush=True)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
    if a.gemm_n:
        print(f"RESULT framework=pytorch gemm dtype=bf16 n={a.gemm_n} tflops={gemm_rate(device, a.gemm_n):.1f}")


if __name__ == "__main__":
    main()
