"""Time gradient ascent (the GA baseline of step 05) with and without the prefix cache.

GA, SGA and GA+KL train only the tracked blocks, so the blocks below them compute the
same states at every step; with a :class:`trustrepair.prefix.PrefixCache` they run once
per sequence. Both sides start from the same model and must end at the same weights
(the largest difference is printed). Uses the model bench_prefix.py uses.

    python benchmarks/bench_baselines.py                # 30 dialogues, 5 steps, 4 blocks
    python benchmarks/bench_baselines.py --tiny         # tiny model, seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time

import torch
from bench_prefix import WORDS, cached_model
from datasets import Dataset

from trustrepair.baselines import gradient_ascent
from trustrepair.models import decoder_blocks, load_pretrained, tiny_model, tracked_linear_modules
from trustrepair.params import TinyModelParams
from trustrepair.prefix import PrefixCache
from trustrepair.tokenizer import train_bpe_tokenizer


def dialogues(n: int, words: int, seed: int = 0) -> Dataset:
    """``n`` random dialogues: a prompt of ``words`` words, a response of a third of that."""
    rng = random.Random(seed)

    def text(k: int) -> str:
        return " " + " ".join(rng.choice(WORDS) for _ in range(k))

    return Dataset.from_dict({"prompt": [text(words) for _ in range(n)],
                              "response": [text(words // 3) for _ in range(n)]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random-init model")
    parser.add_argument("--samples", type=int, default=30, help="dialogues in the subset S")
    parser.add_argument("--steps", type=int, default=5, help="SGD steps")
    parser.add_argument("--blocks", type=int, default=4, help="trained (tracked) last blocks")
    parser.add_argument("--words", type=int, default=90, help="prompt words (response: a third)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (more only on an otherwise idle machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    folder = None if args.tiny else cached_model()
    if folder is None:
        tokenizer = train_bpe_tokenizer([" ".join(WORDS)] * 4, vocab_size=600)
        spec = TinyModelParams(family="llama", layers=6, hidden=64, heads=4, intermediate=128)
        model, name = tiny_model(spec, len(tokenizer)), "tiny llama (6 blocks, hidden 64)"
        args.blocks = min(args.blocks, 2)
    else:
        model, tokenizer = load_pretrained(folder)
        name = folder.name
    subset = dialogues(args.samples, args.words)
    modules = tracked_linear_modules(model, args.blocks)
    n_blocks = len(decoder_blocks(model))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"GA benchmark: {name}, {n_blocks} blocks, last {args.blocks} trained, "
          f"{args.samples} dialogues, {args.steps} steps, {platform.machine()}, "
          f"load {load:.1f}, torch threads {torch.get_num_threads()}")
    common = {"lr": 1e-5, "steps": args.steps, "max_length": 256}

    start = time.perf_counter()
    full = gradient_ascent(model, tokenizer, subset, modules, **common)
    full_s = time.perf_counter() - start
    start = time.perf_counter()
    cache = PrefixCache(model, n_blocks - args.blocks)
    cached = gradient_ascent(model, tokenizer, subset, modules, cache=cache, **common)
    cached_s = time.perf_counter() - start
    diff = max(float((a - b).detach().abs().max()) for a, b in
               zip(full.parameters(), cached.parameters(), strict=True))
    print(f"full model    {full_s:8.2f} s")
    print(f"prefix cache  {cached_s:8.2f} s  (incl. hashing and {cache.misses} prefixes)")
    print(f"speed-up      {full_s / cached_s:8.1f}x   max |weight difference| {diff:.1e}")


if __name__ == "__main__":
    main()
