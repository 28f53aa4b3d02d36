"""Evaluate a model the way every table of the paper does: F_j per aspect + HH perplexity."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trustrepair.experiment import Experiment
from trustrepair.metrics import response_nll, trust_logodds
from trustrepair.params import EvalParams
from trustrepair.steps import SFT


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
             trust_test: dict[str, Dataset], hh_test: Dataset, params: EvalParams) -> dict:
    """Log-odds F_j on each aspect's test triples and perplexity on the HH test split.

    Returns plain data (JSON-ready): per aspect the mean, the share of triples that
    prefer the proponent, and the per-triple values (for distribution plots); perplexity
    with each dialogue's summed NLL and token count. With the items' ids and the triples'
    units (``groups``: triples that share a question, pair or topic and target group are
    not independent), these let a paired bootstrap put a confidence interval on any change
    between two evaluations.
    """
    result: dict = {"aspects": {}, "length_normalized": params.length_normalized}
    for aspect, triples in trust_test.items():
        odds = trust_logodds(model, tokenizer, triples, batch_size=params.batch_size,
                             max_length=params.max_length, normalized=params.length_normalized,
                             desc=aspect)
        result["aspects"][aspect] = {
            "logodds": odds.mean,
            "prefers_proponent": odds.prefers_proponent,
            "n_triples": len(triples),
            "ids": list(triples["id"]),
            "groups": list(triples["group"]),
            "per_triple": [round(float(v), 6) for v in odds.per_triple],
        }
    nll = response_nll(model, tokenizer, hh_test, batch_size=params.batch_size,
                       max_length=params.max_length)
    result["ppl"] = nll.perplexity
    result["ppl_samples"] = len(hh_test)
    result["ppl_ids"] = list(hh_test["id"])
    result["ppl_nll"] = [round(float(v), 6) for v in nll.nll]
    result["ppl_tokens"] = [int(n) for n in nll.tokens]
    return result


def has_units(result: dict) -> bool:
    """Whether a saved evaluation records each triple's unit, which results saved before
    they were recorded lack (the cluster bootstrap needs them)."""
    return all("groups" in r for r in result["aspects"].values())


def evaluate_saved(exp: Experiment, model_dir: Path | None, out_path: Path) -> dict:
    """Evaluate a saved model (default: the base model) once per setting; JSON at out_path."""
    def compute() -> dict:
        model, tokenizer = exp.models.load(model_dir)
        return evaluate(model, tokenizer, exp.data.trust_test(), exp.data.hh["test"],
                        exp.params.eval)

    return exp.cached(SFT, out_path, compute, reusable=has_units)
