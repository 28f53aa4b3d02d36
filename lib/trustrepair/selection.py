"""Step 03: pick the subset S to repair with, for each aspect and for all aspects at once.

Reads the detrimental scores and hidden-state features of step 02 and runs every selector
of :mod:`trustrepair.dpp` (DPP, plain top-k, random) so that later steps compare them by
name. Writes the step's ``subsets``: target -> selector -> SFT sample indices (in
selection order) and ids.
"""

from __future__ import annotations

import pandas as pd

from trustrepair import dpp
from trustrepair.attribution import load_features, load_scores
from trustrepair.experiment import Experiment
from trustrepair.results import Subsets
from trustrepair.steps import SELECTION

SELECTORS = ("dpp", "topk", "random")


def run_selection(exp: Experiment) -> dict:
    """Subsets of size ``selection.k`` per target (each aspect and ``common``)."""
    p = exp.params.selection

    def compute() -> dict:
        scores, features = load_scores(exp), load_features(exp)
        ids = exp.data.hh["train"]["id"]
        subsets = {}
        for target, harm in scores.items():
            subsets[target] = {}
            for name in SELECTORS:
                picked = dpp.select(name, features=features, scores=harm, k=p.k, eta=p.eta,
                                    gamma=p.gamma, seed=exp.params.seed)
                subsets[target][name] = {"indices": picked, "ids": [ids[i] for i in picked]}
        return {"k": p.k, "eta": p.eta, "subsets": subsets}

    return exp.cached(SELECTION, exp.output(SELECTION, "subsets"), compute)


def load_subsets(exp: Experiment) -> Subsets:
    """This run's step 03 result."""
    return Subsets.load(exp.run_dir)


def summarize(exp: Experiment, subsets: dict) -> pd.DataFrame:
    """Per target and selector: mean detrimental score of S and its diversity log det(K_S + I)."""
    scores, features = load_scores(exp), load_features(exp)
    p = exp.params.selection
    rows = []
    for target, picks in subsets["subsets"].items():
        for name, pick in picks.items():
            idx = pick["indices"]
            rows.append({"target": target, "selector": name,
                         "mean_detrimental": float(scores[target][idx].mean()),
                         "logdet_diversity": dpp.objective(features, scores[target], idx,
                                                           eta=0.0, gamma=p.gamma),
                         "objective": dpp.objective(features, scores[target], idx, eta=p.eta,
                                                    gamma=p.gamma)})
    return pd.DataFrame(rows)
