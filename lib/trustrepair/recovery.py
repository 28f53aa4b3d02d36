"""Step 02b: does attribution find the planted harmful samples? (beyond the paper)

Four methods rank the SFT train set for each aspect, higher = more suspect:
EK-FAC influence (step 02), the plain gradient dot product (kronfluence's ``identity``
strategy, TracIn-style, no preconditioning), the cosine similarity of a sample's hidden
state to the nearest opponent text of the aspect, and random scores. Step 05 repairs with
the top-k of the gradient dot product and of the hidden-state cosine, to see whether a cheaper
ranker than EK-FAC would do.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trustrepair.attribution import (
    detrimental,
    fit_and_score,
    load_features,
    load_scores,
    post_sft_dir,
)
from trustrepair.experiment import Experiment
from trustrepair.features import mean_pooled_hidden_states
from trustrepair.planted import planted_mask, recovery_table, roc_curve
from trustrepair.prefix import PrefixCache
from trustrepair.steps import ATTRIBUTION, PLANTED
from trustrepair.uncertainty import bootstrap_of

METHODS = ("ekfac", "gradient_dot", "hidden_cosine", "random")


def opponent_similarity(train_features: torch.Tensor,
                        opponent_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each train sample to its nearest opponent text."""
    a = F.normalize(train_features.double(), dim=1)
    b = F.normalize(opponent_features.double(), dim=1)
    return (a @ b.T).max(dim=1).values


def hidden_cosine_scores(exp: Experiment, model: PreTrainedModel,
                         tokenizer: PreTrainedTokenizerBase) -> dict[str, torch.Tensor]:
    """Aspect -> each SFT train sample's cosine to the nearest opponent text of the aspect's
    trust *train* triples (step 02's hidden-state features of ``model``, the post-SFT one)."""
    p = exp.params
    cosine = {}
    for aspect, splits in exp.data.trust.items():
        triples = splits["train"]
        opponents = Dataset.from_dict({"prompt": triples["prompt"],
                                       "response": triples["opponent"]})
        emb = mean_pooled_hidden_states(model, tokenizer, opponents,
                                        max_length=p.eval.max_length,
                                        batch_size=p.eval.batch_size)
        cosine[aspect] = opponent_similarity(load_features(exp), emb)
    return cosine


def gradient_dot_scores(exp: Experiment, model: PreTrainedModel,
                        tokenizer: PreTrainedTokenizerBase, out_dir: Path, *,
                        cache: PrefixCache | None = None) -> dict[str, torch.Tensor]:
    """Aspect -> detrimental gradient dot product of each SFT train sample with F_j on the
    aspect's trust *train* triples: step 02's scoring with kronfluence's ``identity``
    strategy, i.e. no preconditioner.

    kronfluence keeps its results under ``out_dir``, named by steps 01-02's settings (what
    the scores depend on), so a rerun reuses them. It hooks into ``model``: pass a copy
    that is not used afterwards.
    """
    p = exp.params
    identity = p.attribution.model_copy(update={"strategy": "identity"})
    dot = fit_and_score(model, tokenizer, exp.data.hh["train"],
                        {a: s["train"] for a, s in exp.data.trust.items()}, identity,
                        out_dir=out_dir, name=exp.fingerprint(ATTRIBUTION),
                        sft_max_length=p.sft.max_length, eval_max_length=p.eval.max_length,
                        normalized=p.eval.length_normalized, seed=p.seed,
                        overwrite=exp.recompute, cache=cache)
    return {a: detrimental(s) for a, s in dot.scores.items()}


def method_scores(exp: Experiment) -> dict[str, dict[str, torch.Tensor]]:
    """Method -> aspect -> suspicion score for every SFT train sample."""
    p = exp.params
    aspects = list(exp.data.trust)
    model, tokenizer = exp.models.load(post_sft_dir(exp))
    cosine = hidden_cosine_scores(exp, model, tokenizer)
    dot = gradient_dot_scores(exp, model, tokenizer, exp.output(PLANTED, "kronfluence"))
    generator = torch.Generator().manual_seed(p.seed)
    ekfac = load_scores(exp)
    return {"ekfac": {a: ekfac[a] for a in aspects},
            "gradient_dot": dot,
            "hidden_cosine": cosine,
            "random": {a: torch.rand(len(exp.data.hh["train"]), generator=generator)
                       for a in aspects}}


def run_recovery(exp: Experiment) -> dict:
    """Recovery of the planted ids per method and aspect, with ROC curves; saved as JSON."""
    k = exp.params.planted.per_aspect

    def compute() -> dict:
        scores = method_scores(exp)
        ids = exp.data.hh["train"]["id"]
        table = recovery_table(scores, ids, k, bootstrap_of(exp.params))
        curves = {m: {a: roc_curve(v, planted_mask(ids, a)) for a, v in per.items()}
                  for m, per in scores.items()}
        return {"k": k, "table": table.to_dict(orient="records"), "roc": curves}

    return exp.cached(PLANTED, exp.output(PLANTED, "recovery"), compute)
