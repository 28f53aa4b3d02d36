"""Time a step-05 baseline (gradient ascent or DPO) with and without the prefix cache.

Every baseline trains only the tracked blocks, so the blocks below them compute the same
states at every step (DPO: twice, for the policy and the reference); with a
:class:`trustrepair.prefix.PrefixCache` they run once per sequence. Both sides start from
the same model and must end at the same weights (the largest difference is printed). Uses
the model bench_prefix.py uses. For DPO it also times, with the cache filled, TRL's own
CPU head, which projects every position (prompt and padding too) where ours projects only
the scored ones.

    python benchmarks/bench_baselines.py                # GA: 30 dialogues, 5 steps
    python benchmarks/bench_baselines.py --method dpo   # DPO: 30 pairs, 5 steps of 8
    python benchmarks/bench_baselines.py --tiny         # tiny model, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import tempfile
import time
import unittest.mock
from functools import partial

import torch
from bench_prefix import benchmark_model, model_arguments, random_rows

from trustrepair import baselines
from trustrepair.baselines import dpo, gradient_ascent
from trustrepair.models import decoder_blocks, tracked_linear_modules
from trustrepair.prefix import PrefixCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(parser)
    parser.add_argument("--method", choices=["ga", "dpo"], default="ga")
    parser.add_argument("--samples", type=int, default=30,
                        help="dialogues in the subset S (DPO: preference pairs)")
    parser.add_argument("--steps", type=int, default=5, help="optimiser steps")
    parser.add_argument("--blocks", type=int, default=1, help="trained (tracked) last blocks")
    parser.add_argument("--words", type=int, default=90, help="prompt words (response: a third)")
    args = parser.parse_args()
    model, tokenizer, name = benchmark_model(args)
    if args.method == "ga":
        data = random_rows(args.samples, {"prompt": args.words, "response": args.words // 3})
        train = partial(gradient_ascent, subset=data)
    else:
        data = random_rows(args.samples, {"prompt": args.words, "chosen": args.words // 3,
                                          "rejected": args.words // 3})
        train = partial(dpo, pairs=data, beta=0.1, batch_size=8,
                        output_dir=tempfile.mkdtemp(prefix="bench-dpo-"))
    modules = tracked_linear_modules(model, args.blocks)
    n_blocks = len(decoder_blocks(model))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.method.upper()} benchmark: {name}, {n_blocks} blocks, last {args.blocks} "
          f"trained, {args.samples} samples, {args.steps} steps, {platform.machine()}, "
          f"load {load:.1f}, torch threads {torch.get_num_threads()}")
    common = {"lr": 1e-5, "steps": args.steps, "max_length": 256}

    start = time.perf_counter()
    full = train(model, tokenizer, modules=modules, **common)
    full_s = time.perf_counter() - start
    start = time.perf_counter()
    cache = PrefixCache(model, n_blocks - args.blocks)
    cached = train(model, tokenizer, modules=modules, cache=cache, **common)
    cached_s = time.perf_counter() - start
    start = time.perf_counter()  # a further grid point: step 05 keeps one cache for all
    train(model, tokenizer, modules=modules, cache=cache, **common)
    warm_s = time.perf_counter() - start
    diff = max(float((a - b).detach().abs().max()) for a, b in
               zip(full.parameters(), cached.parameters(), strict=True))
    print(f"full model    {full_s:8.2f} s")
    print(f"prefix cache  {cached_s:8.2f} s  (incl. hashing and {cache.misses} prefixes)")
    print(f"cache filled  {warm_s:8.2f} s  (a further run on the same sequences)")
    print(f"speed-up      {full_s / cached_s:8.1f}x, {full_s / warm_s:.1f}x filled   "
          f"max |weight difference| {diff:.1e}")
    if args.method == "dpo":
        start = time.perf_counter()
        with unittest.mock.patch.object(baselines, "_compact_lm_head", contextlib.nullcontext):
            every = train(model, tokenizer, modules=modules, cache=cache, **common)
        every_s = time.perf_counter() - start
        diff = max(float((a - b).detach().abs().max()) for a, b in
                   zip(every.parameters(), cached.parameters(), strict=True))
        print(f"every position{every_s:8.2f} s  (cache filled, TRL's head on every position)")
        print(f"head speed-up {every_s / warm_s:8.1f}x   max |weight difference| {diff:.1e}")


if __name__ == "__main__":
    main()
