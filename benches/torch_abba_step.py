#!/usr/bin/env python3
"""PyTorch reference for the ABBA training-step benchmark.

Times one full optimisation step of an ABBA reconstruction fit on CPU:

    loss = || s * (B1 @ A1) * (B2 @ A2) - T ||_F^2 / ||T||_F^2,   T ~ U[0, 1) (m x n), s = 1,

with torch.optim.Adam (lr 1e-3); a step is zero_grad + forward + backward + optimizer.step. The mean wall time
per step over --steps steps (after --warmup untimed ones) is printed as ONE JSON line on stdout:

    {"impl": "pytorch", "torch": "...", "threads": N, "m": .., "n": .., "r1": .., "r2": .., "dtype": "float32",
     "ms_per_step": .., "steps": .., "peak_gemm_ms": ..}

peak_gemm_ms is the mean time of one --peak-side cubed float32 matmul (torch.mm), the machine's peak rate as
PyTorch's BLAS reaches it.

Usage: python benches/torch_abba_step.py [--m 1024 --n 1024 --r1 36 --r2 36 --steps 30 --warmup 5
                                          --threads N --dtype float32 --seed 0 --peak-side 2048]
"""
import argparse
import json
import sys
import time

import torch


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--m", type=int, default=1024)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--r1", type=int, default=36)
    p.add_argument("--r2", type=int, default=36)
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before timing")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64", "bfloat16", "float16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peak-side", type=int, default=2048, help="side of the square sgemm timed as the peak")
    args = p.parse_args()
    if args.steps < 1 or args.warmup < 0 or min(args.m, args.n, args.r1, args.r2) < 1:
        p.error("need steps >= 1, warmup >= 0 and positive sizes")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(args.seed)

    m, n, r1, r2 = args.m, args.n, args.r1, args.r2
    target = torch.rand(m, n, generator=gen, dtype=torch.float32).to(dtype)
    target_norm2 = target.float().pow(2).sum().to(dtype)

    def factor(rows, cols):
        return torch.nn.Parameter((torch.randn(rows, cols, generator=gen, dtype=torch.float32) * 0.1).to(dtype))

    b1, a1, b2, a2 = factor(m, r1), factor(r1, n), factor(m, r2), factor(r2, n)
    s = 1.0
    opt = torch.optim.Adam([b1, a1, b2, a2], lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        delta = s * (b1 @ a1) * (b2 @ a2)
        loss = (delta - target).pow(2).sum() / target_norm2
        loss.backward()
        opt.step()
        return loss

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    elapsed = time.perf_counter() - t0

    side = args.peak_side
    x = torch.randn(side, side, generator=gen)
    y = torch.randn(side, side, generator=gen)
    torch.mm(x, y)
    peak_iters = 5
    p0 = time.perf_counter()
    for _ in range(peak_iters):
        torch.mm(x, y)
    peak_ms = (time.perf_counter() - p0) / peak_iters * 1e3
    if not torch.isfinite(loss.detach()):
        print(f"warning: final loss is {loss.item()}", file=sys.stderr)

    print(json.dumps({
        "impl": "pytorch",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "m": m, "n": n, "r1": r1, "r2": r2,
        "dtype": args.dtype,
        "ms_per_step": round(elapsed / args.steps * 1e3, 4),
        "steps": args.steps,
        "peak_gemm_ms": round(peak_ms, 4),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
