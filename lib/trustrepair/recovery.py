"""Step 02b: does attribution find the planted harmful samples? (beyond the paper)

Four methods rank the SFT train set for each aspect, higher = more suspect:
EK-FAC influence (step 02), the plain gradient dot product (kronfluence's ``identity``
strategy, TracIn-style, no preconditioning), the cosine similarity of a sample's hidden
state to the nearest opponent text of the aspect, and random scores. Step 05 repairs with
the top-k of the gradient dot product and of the hidden-state cosine, to see whether a cheaper
ranker than EK-FAC would do.

Recovery only means something where the planted dialogues do harm the attribution queries.
Asserting a statement that no query holds need not raise F_j on the queries (a stereotype of
one template need not make the model prefer the stereotypes of the others), so
:func:`planted_harm` checks it without any attribution: a short fine-tune of the post-SFT
model on an aspect's planted dialogues against one on ordinary SFT dialogues.
"""

from __future__ import annotations

import copy
import random
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
from trustrepair.metrics import (
    encode_dialogues,
    length_sorted_batches,
    response_logits,
    response_loss,
    trust_logodds,
)
from trustrepair.planted import PLANTED_PREFIX, planted_mask, recovery_table, roc_curve
from trustrepair.prefix import PrefixCache
from trustrepair.steps import ATTRIBUTION, PLANTED
from trustrepair.uncertainty import bootstrap_of, logodds_change

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


def fine_tuned(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
               dialogues: Dataset, *, steps: int, lr: float, max_length: int) -> PreTrainedModel:
    """A copy of ``model`` after ``steps`` full-batch AdamW steps on the mean over
    ``dialogues`` of each one's mean response cross-entropy: every dialogue weighs alike,
    and AdamW's first steps have about the size ``lr`` whatever the gradient's scale, so
    sets of different sizes move the model by as much."""
    tuned = copy.deepcopy(model).eval()
    encoded = encode_dialogues(tokenizer, dialogues, max_length)
    optimizer = torch.optim.AdamW(tuned.parameters(), lr=lr, weight_decay=0.0)
    device = next(model.parameters()).device
    for _ in range(steps):
        optimizer.zero_grad()
        for _, batch in length_sorted_batches(encoded, 8, tokenizer.pad_token_id, device,
                                              desc="harm check"):
            loss = response_loss(*response_logits(tuned, batch), "mean") / len(encoded)
            loss.backward()
        optimizer.step()
    return tuned


def planted_harm(exp: Experiment, model: PreTrainedModel,
                 tokenizer: PreTrainedTokenizerBase) -> list[dict]:
    """Per aspect: F_j on its attribution queries after fine-tuning ``model`` (the post-SFT
    one) on the aspect's planted dialogues, minus F_j after as many steps on
    ``planted.harm_control`` ordinary SFT dialogues, with its paired interval over the
    queries' units. ``harmful`` = the interval lies above 0: the planted dialogues harm the
    queries more than ordinary data, so a method that scores them first is right to."""
    p = exp.params
    train = exp.data.hh["train"]
    ordinary = [i for i, name in enumerate(train["id"]) if not name.startswith(PLANTED_PREFIX)]
    drawn = random.Random(p.seed).sample(ordinary, min(p.planted.harm_control, len(ordinary)))
    settings = {"steps": p.planted.harm_steps, "lr": p.sft.learning_rate,
                "max_length": p.sft.max_length}

    def query_logodds(tuned: PreTrainedModel, aspect: str) -> torch.Tensor:
        return trust_logodds(tuned, tokenizer, exp.data.trust[aspect]["train"],
                             batch_size=p.eval.batch_size, max_length=p.eval.max_length,
                             normalized=p.eval.length_normalized, desc=aspect).per_triple

    control = fine_tuned(model, tokenizer, train.select(sorted(drawn)), **settings)
    rows = []
    for aspect in exp.data.trust:
        plants = train.select(planted_mask(train["id"], aspect).nonzero().flatten().tolist())
        after_plants = query_logodds(fine_tuned(model, tokenizer, plants, **settings), aspect)
        after_control = query_logodds(control, aspect)
        interval, _ = logodds_change(after_control.tolist(), after_plants.tolist(),
                                     bootstrap_of(p), exp.data.trust[aspect]["train"]["group"])
        excess = float(after_plants.mean() - after_control.mean())
        rows.append({"aspect": aspect, "planted": len(plants), "control": len(drawn),
                     "excess_logodds": excess, "excess_logodds_ci_low": interval.low,
                     "excess_logodds_ci_high": interval.high,
                     "harmful": interval.low > 0})
    return rows


def run_recovery(exp: Experiment) -> dict:
    """Recovery of the planted ids per method and aspect, with ROC curves, and whether the
    planted dialogues harm the queries at all (:func:`planted_harm`); saved as JSON."""
    k = exp.params.planted.per_aspect

    def compute() -> dict:
        scores = method_scores(exp)
        ids = exp.data.hh["train"]["id"]
        table = recovery_table(scores, ids, k, bootstrap_of(exp.params))
        curves = {m: {a: roc_curve(v, planted_mask(ids, a)) for a, v in per.items()}
                  for m, per in scores.items()}
        harm = planted_harm(exp, *exp.models.load(post_sft_dir(exp)))
        return {"k": k, "table": table.to_dict(orient="records"), "roc": curves, "harm": harm}

    return exp.cached(PLANTED, exp.output(PLANTED, "recovery"), compute)
