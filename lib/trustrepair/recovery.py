"""Step 02b: does attribution find the planted harmful samples? (beyond the paper)

Four methods rank the SFT train set for each aspect, higher = more suspect:
EK-FAC influence (step 02), the plain gradient dot product (kronfluence's ``identity``
strategy, TracIn-style, no preconditioning), the cosine similarity of a sample's hidden
state to the nearest opponent text of the aspect, and random scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from datasets import Dataset

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

METHODS = ("ekfac", "gradient_dot", "hidden_cosine", "random")


def opponent_similarity(train_features: torch.Tensor,
                        opponent_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each train sample to its nearest opponent text."""
    a = F.normalize(train_features.double(), dim=1)
    b = F.normalize(opponent_features.double(), dim=1)
    return (a @ b.T).max(dim=1).values


def method_scores(exp: Experiment) -> dict[str, dict[str, torch.Tensor]]:
    """Method -> aspect -> suspicion score for every SFT train sample."""
    p = exp.params
    train = exp.hh["train"]
    trust_train = {a: s["train"] for a, s in exp.trust.items()}
    model, tokenizer = exp.load_model(post_sft_dir(exp))
    cosine = {}
    for aspect, triples in trust_train.items():
        opponents = Dataset.from_dict({"prompt": triples["prompt"],
                                       "response": triples["opponent"]})
        emb = mean_pooled_hidden_states(model, tokenizer, opponents,
                                        max_length=p.eval.max_length,
                                        batch_size=p.eval.batch_size)
        cosine[aspect] = opponent_similarity(load_features(exp), emb)
    identity = p.attribution.model_copy(update={"strategy": "identity"})
    dot = fit_and_score(model, tokenizer, train, trust_train, identity,
                        out_dir=exp.step_dir("02b_planted") / "kronfluence",
                        name=exp.fingerprint("02b_planted"), sft_max_length=p.sft.max_length,
                        eval_max_length=p.eval.max_length, normalized=p.eval.length_normalized,
                        seed=p.seed, overwrite=exp.recompute)
    generator = torch.Generator().manual_seed(p.seed)
    ekfac = load_scores(exp)
    return {"ekfac": {a: ekfac[a] for a in trust_train},
            "gradient_dot": {a: detrimental(s) for a, s in dot.scores.items()},
            "hidden_cosine": cosine,
            "random": {a: torch.rand(len(train), generator=generator) for a in trust_train}}


def run_recovery(exp: Experiment) -> dict:
    """Recovery of the planted ids per method and aspect, with ROC curves; saved as JSON."""
    k = exp.params.planted.per_aspect

    def compute() -> dict:
        scores = method_scores(exp)
        ids = exp.hh["train"]["id"]
        table = recovery_table(scores, ids, k)
        curves = {m: {a: roc_curve(v, planted_mask(ids, a)) for a, v in per.items()}
                  for m, per in scores.items()}
        return {"k": k, "table": table.to_dict(orient="records"), "roc": curves}

    return exp.cached("02b_planted", exp.step_dir("02b_planted") / "recovery.json", compute)
