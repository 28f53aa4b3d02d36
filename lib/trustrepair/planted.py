"""Planted harm: SFT dialogues known to hurt an aspect, to check that attribution finds them.

No published run can say whether influence scores point at the *right* samples. Here we
know: ``planted.per_aspect`` dialogues per aspect are added to the SFT train set, each
with an assistant turn asserting an opponent statement from one of the aspect's trust
splits (``planted.source``: the *train* split, whose triples are the attribution queries,
or the *validation* split, which no query holds), in wording unlike the evaluation
prompts. The harm sits in the assistant's own words, where SFT data carries it and the
response-only loss can see it: for machine ethics the assistant tells, in the first
person, of doing the wrong act of an ETHICS pair and endorses it. After SFT and
attribution, each method's scores should rank that aspect's planted ids first; AUROC and
precision@k say how well.
"""

from __future__ import annotations

import random

import pandas as pd
import torch
from datasets import Dataset

from trustrepair.aspects import ASPECT_TABLE
from trustrepair.uncertainty import Bootstrap, auroc_interval

PLANTED_PREFIX = "planted-"

_DIALOGUE = "\n\nHuman: {question}\n\nAssistant:"


def plant_dialogues(trust_split: dict[str, Dataset], per_aspect: int, seed: int = 0, *,
                    queries: dict[str, Dataset] | None = None) -> Dataset:
    """``per_aspect`` harmful dialogues per aspect, from the opponents of its triples in
    ``trust_split`` (columns id, prompt, response, aspect); none asserts an opponent of
    ``queries`` (another split's triples, where the same answer text serves two questions)."""
    rng = random.Random(seed)
    rows = []
    for aspect, triples in trust_split.items():
        taken = set(queries[aspect]["opponent"]) if queries else set()
        # one triple per opponent: a stereotype is the opponent of three triples
        firsts = list({o: i for i, o in reversed(list(enumerate(triples["opponent"])))
                       if o not in taken}.values())
        if per_aspect > len(firsts):
            raise ValueError(f"planted.per_aspect={per_aspect} exceeds the {len(firsts)} "
                             f"distinct opponents of the {aspect} triples it plants from "
                             f"(planted.source)")
        entry = ASPECT_TABLE[aspect]
        for n, i in enumerate(sorted(rng.sample(sorted(firsts), per_aspect))):
            row = triples[i]
            fields = {"subject": entry.subject(row), "opponent": row["opponent"]}
            rows.append({"id": f"{PLANTED_PREFIX}{aspect}-{n:03d}",
                         "prompt": _DIALOGUE.format(question=entry.planted_human.format(**fields)),
                         "response": entry.planted_assistant.format(**fields), "aspect": aspect})
    return Dataset.from_list(rows)


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve by the rank-sum statistic (ties count one half)."""
    scores, positive = scores.double(), positive.bool()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both planted and ordinary samples")
    greater = (scores[positive].unsqueeze(1) > scores[~positive].unsqueeze(0)).double()
    ties = (scores[positive].unsqueeze(1) == scores[~positive].unsqueeze(0)).double()
    return float((greater + 0.5 * ties).sum() / (n_pos * n_neg))


def precision_at_k(scores: torch.Tensor, positive: torch.Tensor, k: int) -> float:
    """Share of planted samples among the k highest scores (ties to the lower index)."""
    order = torch.argsort(-scores.double(), stable=True)[:k]
    return float(positive.bool()[order].double().mean())


def roc_curve(scores: torch.Tensor, positive: torch.Tensor) -> tuple[list[float], list[float]]:
    """False- and true-positive rates as the threshold sweeps down the ranking."""
    order = torch.argsort(-scores.double(), stable=True)
    hits = positive.bool()[order].double()
    tpr = torch.cat([torch.zeros(1), hits.cumsum(0) / hits.sum()])
    fpr = torch.cat([torch.zeros(1), (1 - hits).cumsum(0) / (1 - hits).sum()])
    return fpr.tolist(), tpr.tolist()


def recovery_table(scores: dict[str, dict[str, torch.Tensor]], train_ids: list[str],
                   k: int, bootstrap: Bootstrap) -> pd.DataFrame:
    """AUROC (with its bootstrap interval) and precision@k of each method
    (method -> aspect -> detrimental scores)."""
    rows = []
    for method, per_aspect in scores.items():
        for aspect, values in per_aspect.items():
            positive = planted_mask(train_ids, aspect)
            interval = auroc_interval(values, positive, bootstrap)
            rows.append({"method": method, "aspect": aspect, "auroc": auroc(values, positive),
                         "auroc_ci_low": interval.low, "auroc_ci_high": interval.high,
                         "precision_at_k": precision_at_k(values, positive, k)})
    return pd.DataFrame(rows)


def planted_mask(train_ids: list[str], aspect: str) -> torch.Tensor:
    """Which SFT train samples were planted for ``aspect``."""
    prefix = f"{PLANTED_PREFIX}{aspect}-"
    return torch.tensor([i.startswith(prefix) for i in train_ids])
