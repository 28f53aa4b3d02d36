"""Time step 02's DPP features pass followed by a pass that fills the prefix cache: the whole
model then the lower blocks again (before), or the features through the cache, which fills
it (now).

Step 02 pools the final hidden states of every SFT dialogue for the DPP kernel, then fits
and scores EK-FAC on the blocks above the prefix cache over the same dialogues. Before, the
features ran the whole decoder and the fit computed the lower blocks a second time; now the
features pass computes them once, into the cache, and the fit reads them. Both sides must
give the same features (the largest difference is printed). Uses the model
bench_prefix.py uses.

    python benchmarks/bench_features.py            # 100 dialogues of ~120 words
    python benchmarks/bench_features.py --tiny     # tiny model, seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
from bench_prefix import benchmark_model, model_arguments, random_rows

from trustrepair.features import mean_pooled_hidden_states
from trustrepair.metrics import encode_dialogues
from trustrepair.models import decoder_blocks
from trustrepair.prefix import PrefixCache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    model_arguments(parser)
    parser.add_argument("--samples", type=int, default=100, help="SFT dialogues")
    parser.add_argument("--words", type=int, default=90, help="prompt words (response: a third)")
    args = parser.parse_args()
    model, tokenizer, name = benchmark_model(args)
    dialogues = random_rows(args.samples, {"prompt": args.words, "response": args.words // 3})
    rows = [torch.tensor(e["input_ids"]) for e in encode_dialogues(tokenizer, dialogues, 256)]
    first_block = len(decoder_blocks(model)) - 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"features benchmark: {name}, {len(decoder_blocks(model))} blocks, cache below the "
          f"last, {args.samples} dialogues, {platform.machine()}, load {load:.1f}, "
          f"torch threads {torch.get_num_threads()}")
    features = {"max_length": 256, "batch_size": 8}

    start = time.perf_counter()
    whole = mean_pooled_hidden_states(model, tokenizer, dialogues, **features)
    before = PrefixCache(model, first_block)
    for batch in range(0, len(rows), 8):  # the factor fit's first pass over the dialogues
        before._states(model, rows[batch:batch + 8])
    before_s = time.perf_counter() - start

    start = time.perf_counter()
    now = PrefixCache(model, first_block)
    cached = mean_pooled_hidden_states(now.wrap(model), tokenizer, dialogues, **features)
    for batch in range(0, len(rows), 8):  # read from RAM: nothing left to compute
        now._states(model, rows[batch:batch + 8])
    now_s = time.perf_counter() - start
    assert now.misses == len(set(map(tuple, map(torch.Tensor.tolist, rows))))

    print(f"before  {before_s:8.2f} s  (whole-model features, then {before.misses} prefixes)")
    print(f"now     {now_s:8.2f} s  (features through the cache: {now.misses} prefixes)")
    print(f"speed-up {before_s / now_s:7.1f}x   max |feature difference| "
          f"{float((whole - cached).abs().max()):.1e}")


if __name__ == "__main__":
    main()
