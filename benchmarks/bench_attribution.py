"""Time step 02's EK-FAC fit and scores with and without the prefix cache, on a slice.

Runs trustrepair.attribution.fit_and_score on the first ``--samples`` SFT dialogues
(factors fitted on all of them) against ``--queries`` train triples of one aspect, once
on the whole model and once with the states below the tracked blocks cached, and prints
both times and how far the scores differ. Needs step 01 of the params file (its post-SFT
model); writes only under a temporary folder.

    python benchmarks/bench_attribution.py params/default.yaml
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from trustrepair.attribution import fit_and_score, post_sft_dir
from trustrepair.experiment import Experiment
from trustrepair.prefix import for_tracked_blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("params")
    parser.add_argument("--samples", type=int, default=100, help="SFT dialogues scored")
    parser.add_argument("--queries", type=int, default=50, help="trust train triples")
    parser.add_argument("--aspect", default="truthfulness")
    args = parser.parse_args()

    exp = Experiment.from_file(args.params)
    p = exp.params
    train = exp.data.hh["train"].select(range(min(args.samples, len(exp.data.hh["train"]))))
    queries = exp.data.trust[args.aspect]["train"]
    queries = queries.select(range(min(args.queries, len(queries))))
    attribution = p.attribution.model_copy(update={"factor_samples": len(train)})
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"attribution benchmark: {p.name}, {len(train)} SFT dialogues (factors and scores), "
          f"{len(queries)} {args.aspect} triples, tracked blocks {attribution.tracked_blocks}, "
          f"load {load:.1f}, torch threads {torch.get_num_threads()}")
    seconds, scores = {}, {}
    with tempfile.TemporaryDirectory() as out:
        for name in ("whole model", "prefix cache"):
            model, tokenizer = exp.models.load(post_sft_dir(exp))  # kronfluence wraps in place
            cache = (for_tracked_blocks(model, attribution.tracked_blocks)
                     if name == "prefix cache" else None)
            torch.manual_seed(p.seed)  # the true Fisher samples labels
            start = time.perf_counter()
            scores[name] = fit_and_score(
                model, tokenizer, train, {args.aspect: queries}, attribution, out_dir=out,
                name=name.replace(" ", "_"), sft_max_length=p.sft.max_length,
                eval_max_length=p.eval.max_length, normalized=p.eval.length_normalized,
                seed=p.seed, cache=cache).scores[args.aspect]
            seconds[name] = time.perf_counter() - start
            print(f"{name:<13} {seconds[name]:8.1f} s", flush=True)
    whole, cached = scores["whole model"], scores["prefix cache"]
    rel = float((whole - cached).abs().max() / whole.abs().max())
    same_top = set(whole.argsort()[-10:].tolist()) == set(cached.argsort()[-10:].tolist())
    print(f"speed-up      {seconds['whole model'] / seconds['prefix cache']:8.1f}x   "
          f"max score difference {rel:.1e} of the largest; same top 10: {same_top}")


if __name__ == "__main__":
    main()
