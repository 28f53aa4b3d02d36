"""Time trustrepair.dpp.greedy_map (fast greedy, incremental Cholesky) against brute force.

Brute force is the textbook greedy: every step recomputes T(S + i) = log det(K_{S+i} + I)
+ eta log(1 + sum gamma_hat) from scratch for every candidate i (batched slogdet), O(N k^4)
in all, so it runs only where that is feasible. Features are random Gaussian (float32),
scores uniform, eta = 1.

    python benchmarks/bench_dpp.py            # full table, N up to 96k, D = 576 and 2048
    python benchmarks/bench_dpp.py --quick    # small smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from trustrepair import dpp
from trustrepair.dpp import greedy_map

TARGET = (96_000, 576, 100, 2.0)  # N, D, k, seconds


def brute_force(x: np.ndarray, scores: np.ndarray, k: int, eta: float) -> list[int]:
    """Greedy MAP recomputing every candidate's T(S + i) from scratch; same tie rule."""
    x64 = x.astype(np.float64)
    sq = (x64**2).sum(1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x64 @ x64.T, 0.0)
    kernel = np.exp(-dpp.rbf_gamma(x) * dist) + np.eye(len(x))  # K + I
    gamma_hat = dpp.normalised_scores(scores)
    picked: list[int] = []
    base = 0.0
    for _ in range(k):
        rest = np.setdiff1d(np.arange(len(x)), picked)
        idx = np.array([[*picked, i] for i in rest])  # (candidates, |S| + 1)
        _, logdet = np.linalg.slogdet(kernel[idx[:, :, None], idx[:, None, :]])
        values = logdet + eta * np.log1p(gamma_hat[idx].sum(1))
        gains = values - base
        best = int(np.argmax(gains >= gains.max() - dpp.TIE_TOL))
        picked.append(int(rest[best]))
        base = values[best]
    return picked


def timed(fn, repeats: int) -> tuple[float, list[int]]:
    """Median wall time over ``repeats`` calls, and the last result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--repeats", type=int, default=None, help="fast runs per size")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.quick:  # (N, D, k, brute force too?)
        rows = [(500, 64, 20, True), (2_000, 64, 20, False)]
    else:
        rows = [(1_000, 576, 100, True), (10_000, 576, 100, False), (10_000, 576, 30, True),
                (96_000, 576, 100, False), (1_000, 2048, 100, True), (10_000, 2048, 100, False),
                (96_000, 2048, 100, False)]
    repeats = args.repeats or (1 if args.quick else 3)
    eta = 1.0

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"greedy_map benchmark: {platform.machine()}, {cpus} usable cpus, load {load:.1f}, "
          f"numpy {np.__version__}, torch threads {torch.get_num_threads()}, eta={eta}, "
          f"fast = median of {repeats}, brute force = 1 run, SPECULATE={dpp.SPECULATE}")
    warm = np.random.default_rng(0)  # first calls pay for BLAS start-up, not the algorithm
    greedy_map(warm.standard_normal((256, 16)), warm.random(256), 8, eta)
    header = f"{'N':>7} {'D':>5} {'k':>4} {'fast s':>8} {'brute s':>9} {'speed-up':>9}  same picks"
    print(header)
    print("-" * len(header))
    for n, d, k, with_brute in rows:
        rng = np.random.default_rng(n + d)
        x = rng.standard_normal((n, d), dtype=np.float32)
        s = rng.random(n)
        fast_s, picks = timed(lambda x=x, s=s, k=k: greedy_map(x, s, k, eta), repeats)
        row = f"{n:>7} {d:>5} {k:>4} {fast_s:>8.3f}"
        if with_brute:
            slow_s, slow = timed(lambda x=x, s=s, k=k: brute_force(x, s, k, eta), 1)
            row += f" {slow_s:>9.2f} {slow_s / fast_s:>8.0f}x  {picks == slow}"
            if n >= 10_000:
                row += "  (brute force only to k=30 here: O(N k^4))"
        else:
            row += f" {'-':>9} {'-':>9}  (brute force skipped: O(N k^4))"
        if (n, d, k) == TARGET[:3]:
            row += f"  [target <= {TARGET[3]:.0f} s: {'met' if fast_s <= TARGET[3] else 'missed'}]"
        print(row, flush=True)


if __name__ == "__main__":
    main()
