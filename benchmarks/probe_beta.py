"""Probe the repair step size β on a finished run: F_j and perplexity per β, no tables written.

The paper picks β by grid search; its range (0.001-0.040, Pythia) need not suit another
model or loss scale. This applies one PBRF step with an aspect's step-03 subset for each β
and measures F_j on a slice of the aspect's test triples and perplexity on a slice of the
HH test dialogues, through the prefix cache (one full forward per sequence, then only the
tracked blocks). Needs steps 01-03 of the params file.

    python benchmarks/probe_beta.py params/default.yaml --aspect truthfulness
"""

from __future__ import annotations

import argparse

from trustrepair import prefix
from trustrepair.attribution import post_sft_dir
from trustrepair.data import at_most
from trustrepair.experiment import Experiment
from trustrepair.metrics import perplexity, trust_logodds
from trustrepair.repair import Preconditioner, pbrf_step, subset_gradient
from trustrepair.selection import load_subsets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("params")
    parser.add_argument("--aspect", default="truthfulness")
    parser.add_argument("--selector", default="dpp", choices=["dpp", "topk", "random"])
    parser.add_argument("--betas", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3])
    parser.add_argument("-n", type=int, default=60, help="test triples and HH dialogues")
    args = parser.parse_args()

    exp = Experiment.from_file(args.params)
    p = exp.params
    preconditioner = Preconditioner.of_run(exp)
    subsets = load_subsets(exp)
    model, tokenizer = exp.load_model(post_sft_dir(exp))
    cache = exp.prefix_cache(model)
    triples = at_most(exp.trust_test()[args.aspect], args.n, p.seed)
    dialogues = exp.hh["test"].select(range(min(args.n, len(exp.hh["test"]))))
    subset = exp.hh["train"].select(subsets[args.aspect][args.selector]["indices"])
    gradient = subset_gradient(model, tokenizer, subset, preconditioner.modules,
                               max_length=p.sft.max_length,
                               batch_size=p.attribution.train_batch_size)

    print(f"{args.params}: {args.aspect}, {args.selector} subset of {len(subset)}, "
          f"{len(triples)} test triples, {len(dialogues)} HH test dialogues")
    print(f"{'beta':>8}  {'F_j':>8}  {'ppl':>8}  {'ppl change':>10}")
    base_ppl = None
    for beta in [0.0, *args.betas]:
        moved = model if beta == 0 else pbrf_step(model, preconditioner, gradient, beta)
        view = prefix.through(cache, moved)
        f = trust_logodds(view, tokenizer, triples, batch_size=p.eval.batch_size,
                          max_length=p.eval.max_length, normalized=p.eval.length_normalized).mean
        ppl = perplexity(view, tokenizer, dialogues, batch_size=p.eval.batch_size,
                         max_length=p.eval.max_length)
        base_ppl = base_ppl or ppl
        print(f"{beta:8.0e}  {f:8.4f}  {ppl:8.3f}  {100 * (ppl - base_ppl) / base_ppl:+9.2f}%",
              flush=True)


if __name__ == "__main__":
    main()
