"""Time a whole-model evaluation of a params file's test data: every sequence scored in
length-sorted batches (the scoring before distinct sequences and shared prompts) against
trustrepair.metrics as it is, with the largest per-item difference between the two.

This is what steps 01 and 05 pay per whole-model evaluation (pre-SFT, post-SFT, each
retrained model). Both sides score the base model of the params file on each aspect's test
triples and on the HH test dialogues, in the same process, one after the other.

    python benchmarks/bench_scoring.py                         # params/default.yaml
    python benchmarks/bench_scoring.py params/smoke.yaml
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from trustrepair.experiment import Experiment
from trustrepair.metrics import (
    encode,
    encode_dialogues,
    length_sorted_batches,
    response_logprobs,
    response_nll,
    trust_logodds,
)


def every_sequence(model, tokenizer, encoded, batch_size: int, normalized: bool) -> torch.Tensor:
    """The scoring before this package deduplicated: each sequence, in length-sorted batches."""
    scores = torch.empty(len(encoded), dtype=torch.float64)
    with torch.no_grad():
        for idx, batch in length_sorted_batches(encoded, batch_size, tokenizer.pad_token_id,
                                                next(model.parameters()).device, "before"):
            scores[idx] = response_logprobs(model, batch, normalized)[0].double()
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("params", nargs="?", default="params/default.yaml")
    args = parser.parse_args()
    exp = Experiment.from_file(args.params)
    e = exp.params.eval
    model, tokenizer = exp.models.load()
    model.eval()
    print(f"{exp.params.name}: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'items':>22} {'n':>5} {'sequences':>9} {'distinct':>8} {'before s':>9} "
          f"{'now s':>7} {'ratio':>6} {'max |diff|':>11}")
    totals = [0.0, 0.0]
    for aspect, triples in exp.data.trust_test().items():
        prompts = list(triples["prompt"]) * 2
        responses = list(triples["opponent"]) + list(triples["proponent"])
        encoded = [encode(tokenizer, p, r, e.max_length) for p, r in
                   zip(prompts, responses, strict=True)]
        start = time.perf_counter()
        scores = every_sequence(model, tokenizer, encoded, e.batch_size, e.length_normalized)
        before = time.perf_counter() - start
        old = scores[:len(triples)] - scores[len(triples):]
        start = time.perf_counter()
        new = trust_logodds(model, tokenizer, triples, batch_size=e.batch_size,
                            max_length=e.max_length, normalized=e.length_normalized).per_triple
        now = time.perf_counter() - start
        distinct = len({tuple(x["input_ids"]) for x in encoded})
        row(aspect, len(triples), len(encoded), distinct, before, now, old, new, totals)
    hh = exp.data.hh["test"]
    encoded = encode_dialogues(tokenizer, hh, e.max_length)
    start = time.perf_counter()
    old = -every_sequence(model, tokenizer, encoded, e.batch_size, normalized=False)
    before = time.perf_counter() - start
    start = time.perf_counter()
    new = response_nll(model, tokenizer, hh, batch_size=e.batch_size,
                       max_length=e.max_length).nll
    now = time.perf_counter() - start
    row("HH perplexity", len(hh), len(encoded), len({tuple(x["input_ids"]) for x in encoded}),
        before, now, old, new, totals)
    print(f"{'all':>22} {'':>5} {'':>9} {'':>8} {totals[0]:9.1f} {totals[1]:7.1f} "
          f"{totals[0] / totals[1]:6.2f}")


def row(name: str, n: int, sequences: int, distinct: int, before: float, now: float,
        old: torch.Tensor, new: torch.Tensor, totals: list[float]) -> None:
    totals[0] += before
    totals[1] += now
    diff = float((old.double() - new.double()).abs().max())
    print(f"{name:>22} {n:5d} {sequences:9d} {distinct:8d} {before:9.1f} {now:7.1f} "
          f"{before / now:6.2f} {diff:11.2e}", flush=True)


if __name__ == "__main__":
    main()
