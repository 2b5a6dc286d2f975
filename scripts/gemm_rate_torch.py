#!/usr/bin/env python3
"""PyTorch's single-precision GEMM rate (n x n x n, median of 5), beside `mocov3 bench gemm`.

    python scripts/gemm_rate_torch.py [--n 2048] [--threads 0]
"""
import argparse
import statistics
import time

import torch

ap = argparse.ArgumentParser(description=__doc__)
ap.add_argument("--n", type=int, default=2048)
ap.add_argument("--threads", type=int, default=0)
a = ap.parse_args()
if a.threads:
    torch.set_num_threads(a.threads)
x, y = torch.randn(a.n, a.n), torch.randn(a.n, a.n)
torch.mm(x, y)
ts = []
for _ in range(5):
    t0 = time.perf_counter()
    torch.mm(x, y)
    ts.append(time.perf_counter() - t0)
print(f"RESULT framework=pytorch gemm n={a.n} gflops={2 * a.n ** 3 / statistics.median(ts) / 1e9:.1f} threads={torch.get_num_threads()}")
