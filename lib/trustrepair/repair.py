"""The repair: one natural-gradient ascent step on the subset S (paper §3.4, eq. 5).

    θ ← θ_post + β · (G + λI)⁻¹ · mean_{z∈S} ∇θ L(z)

on the tracked decoder blocks only. G is the EK-FAC Fisher fitted in step 02 and
(G + λI)⁻¹ is applied by kronfluence's own preconditioning code, with its damping λ
(the heuristic 0.1 × mean eigenvalue unless ``attribution.damping`` is set), so the
repair uses exactly the curvature the influence scores used. By eq. 6 the step is
predicted to change F_j by ``-β · mean_{z∈S} detrimental(z)``.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset
from kronfluence.arguments import ScoreArguments
from kronfluence.factor.config import FactorConfig
from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from trustrepair import prefix
from trustrepair.attribution import (
    COMMON,
    FACTOR_METADATA,
    load_scores,
    post_sft_dir,
    tracked_weights_hash,
)
from trustrepair.data import at_most
from trustrepair.evaluation import evaluate, has_units
from trustrepair.experiment import Experiment
from trustrepair.metrics import (
    encode_dialogues,
    length_sorted_batches,
    response_logits,
    response_loss,
    trust_logodds,
)
from trustrepair.models import save_pretrained
from trustrepair.params import EvalParams, RepairParams
from trustrepair.profiling import phase
from trustrepair.results import factors_dir
from trustrepair.selection import load_subsets
from trustrepair.steps import REPAIR, TIMINGS

FACTOR_FILES = ("activation_eigenvectors", "gradient_eigenvectors", "lambda_matrix",
                "num_lambda_processed")


@dataclass
class Preconditioner:
    """(G + λI)⁻¹ for each tracked module, from EK-FAC factors saved by kronfluence."""

    modules: list[str]
    storage: dict[str, dict[str, torch.Tensor]]
    strategy: str
    model_hash: str
    fit_seconds: float | None = None
    """Wall time of the factor fit in step 02, where it was recorded."""

    @classmethod
    def of_run(cls, exp: Experiment) -> Preconditioner:
        """The factors step 02 fitted for this run, with the run's damping."""
        return cls.load(factors_dir(exp.run_dir), exp.params.attribution.damping)

    @classmethod
    def load(cls, factors_dir: Path, damping: float | None) -> Preconditioner:
        """Read factors written by step 02 and fold in the damping (kronfluence's ``prepare``)."""
        factors_dir = Path(factors_dir)
        meta_path = factors_dir / FACTOR_METADATA
        if not meta_path.exists():
            raise FileNotFoundError(f"no factors at {factors_dir}: run step 02 first")
        meta = json.loads(meta_path.read_text())
        loaded = {name: load_file(str(factors_dir / f"{name}.safetensors"))
                  for name in FACTOR_FILES if (factors_dir / f"{name}.safetensors").exists()}
        config = FactorConfig.CONFIGS[meta["strategy"]]
        args = ScoreArguments(damping_factor=damping)
        storage = {}
        for module in meta["modules"]:
            storage[module] = {name: per_module[module] for name, per_module in loaded.items()}
            config.prepare(storage[module], args, torch.device("cpu"))
        timings = factors_dir / TIMINGS  # older runs kept the fit's seconds with the metadata
        fit_seconds = (json.loads(timings.read_text()) if timings.exists() else meta).get(
            "fit_seconds")
        return cls(meta["modules"], storage, meta["strategy"], meta["model_hash"], fit_seconds)

    def apply(self, module: str, gradient: torch.Tensor) -> torch.Tensor:
        """(G + λI)⁻¹ g for one module's gradient matrix [dW | db]."""
        config = FactorConfig.CONFIGS[self.strategy]
        return config.precondition_gradient(gradient.to(torch.float32), self.storage[module])

    def check_model(self, model: nn.Module) -> None:
        """Refuse a model the factors were not fitted on (before any compute)."""
        named = dict(model.named_modules())
        missing = [m for m in self.modules if not isinstance(named.get(m), nn.Linear)]
        if missing:
            raise ValueError(f"the factors track modules this model lacks: {missing[:3]}: use "
                             f"factors fitted on this model (rerun step 02)")
        if tracked_weights_hash(model, self.modules) != self.model_hash:
            raise ValueError("the factors were fitted on a different model (its tracked weights "
                             "differ): rerun step 02 on this model")


def subset_gradient(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    subset: Dataset, modules: list[str], *, max_length: int,
                    batch_size: int = 8, cache: prefix.PrefixCache | None = None,
                    loss_reduction: str = "sum") -> dict[str, torch.Tensor]:
    """mean_{z∈S} ∇L(z) per tracked module as a matrix [dW | db] (kronfluence's layout).

    L(z) is the response cross-entropy of z summed over its tokens or their mean
    (``loss_reduction``: ``Params.repair_loss_reduction``, which may differ from the loss
    the scores differentiate, as in the authors' code). With a ``cache`` below ``modules``,
    the forward pass runs only the blocks above it.
    """
    if cache is not None:
        cache.check_below(model, modules)
    named = dict(model.named_modules())
    params = {m: [p for p in (named[m].weight, named[m].bias) if p is not None] for m in modules}
    flat = [p for ps in params.values() for p in ps]
    totals = [torch.zeros_like(p, dtype=torch.float32) for p in flat]
    encoded = encode_dialogues(tokenizer, subset, max_length)
    device = next(model.parameters()).device
    lm = prefix.through(cache, model)
    was_training = model.training
    model.eval()
    # Batches of similar length: a random subset padded in its own order wastes ~half.
    with prefix.filling(cache, [e["input_ids"] for e in encoded], "subset gradient"), \
            phase("subset gradient"):
        for _, batch in length_sorted_batches(encoded, batch_size, tokenizer.pad_token_id,
                                              device, desc="subset gradient"):
            loss = response_loss(*response_logits(lm, batch), loss_reduction)
            for total, grad in zip(totals, torch.autograd.grad(loss, flat), strict=True):
                total += grad.float()
    model.train(was_training)
    out, i = {}, 0
    for module, ps in params.items():
        parts = [totals[i + j] / len(encoded) for j in range(len(ps))]
        i += len(ps)
        out[module] = torch.cat([parts[0], parts[1].unsqueeze(1)], 1) if len(ps) == 2 else parts[0]
    return out


def pbrf_step(model: PreTrainedModel, preconditioner: Preconditioner,
              gradient: dict[str, torch.Tensor], beta: float) -> PreTrainedModel:
    """A copy of ``model`` moved by β · (G + λI)⁻¹ g on the tracked modules (eq. 5)."""
    with phase("PBRF step"):
        repaired = copy.deepcopy(model)
        named = dict(repaired.named_modules())
        with torch.no_grad():
            for module, g in gradient.items():
                step = beta * preconditioner.apply(module, g.cpu())
                layer = named[module]
                layer.weight += step[:, :layer.weight.shape[1]].to(layer.weight)
                if layer.bias is not None:
                    layer.bias += step[:, -1].to(layer.bias)
    return repaired


def repair(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
           preconditioner: Preconditioner, subset: Dataset, beta: float, *,
           max_length: int, batch_size: int = 8, loss_reduction: str = "sum"
           ) -> PreTrainedModel:
    """Repaired copy of ``model``: one PBRF step of size ``beta`` on ``subset`` (eq. 5).

    The input model is left untouched. Bad inputs fail before any gradient is computed.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0 (it scales the ascent step), not {beta}")
    if len(subset) == 0:
        raise ValueError("the repair subset is empty: select at least one SFT sample")
    preconditioner.check_model(model)
    gradient = subset_gradient(model, tokenizer, subset, preconditioner.modules,
                               max_length=max_length, batch_size=batch_size,
                               loss_reduction=loss_reduction)
    return pbrf_step(model, preconditioner, gradient, beta)


@dataclass
class RepairTargets:
    """The post-SFT model and mean ∇L(S) of each repair target's subset (each aspect and
    ``common``): every repaired model of step 04 is one :func:`pbrf_step` away."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    preconditioner: Preconditioner
    cache: prefix.PrefixCache | None
    """States below the tracked blocks: repaired models differ only above them."""
    indices: dict[str, list[int]]
    gradients: dict[str, dict[str, torch.Tensor]]

    @classmethod
    def of_run(cls, exp: Experiment) -> RepairTargets:
        """Steps 01-03's model, factors and ``repair.selector`` subsets of this run."""
        p = exp.params
        preconditioner = Preconditioner.of_run(exp)
        model, tokenizer = exp.models.load(post_sft_dir(exp))
        preconditioner.check_model(model)
        cache = exp.models.prefix_cache(model)
        picked = load_subsets(exp).of(p.repair.selector)
        indices = {target: picked[target] for target in [*p.data.trust.aspects, COMMON]}
        gradients = {target: subset_gradient(
            model, tokenizer, exp.data.hh["train"].select(picked), preconditioner.modules,
            max_length=p.sft.max_length, batch_size=p.attribution.train_batch_size, cache=cache,
            loss_reduction=p.repair_loss_reduction) for target, picked in indices.items()}
        return cls(model, tokenizer, preconditioner, cache, indices, gradients)

    def repaired(self, target: str, beta: float) -> PreTrainedModel:
        """The post-SFT model after one PBRF step of size ``beta`` on ``target``'s subset."""
        return pbrf_step(self.model, self.preconditioner, self.gradients[target], beta)

    def evaluated(self, model: PreTrainedModel, trust: dict[str, Dataset], hh: Dataset,
                  params: EvalParams) -> dict:
        """:func:`~trustrepair.evaluation.evaluate` of ``model`` through the prefix cache."""
        return evaluate(prefix.through(self.cache, model), self.tokenizer, trust, hh, params)


def choose_beta(curve: list[dict], max_ppl_increase: float) -> dict:
    """The ``repair.max_ppl_increase`` rule on a validation curve.

    ``curve`` rows carry ``beta`` and ``ppl_increase`` (%, over the post-SFT model) of one
    repair target. Returns the largest β whose increase is at most ``max_ppl_increase``
    for every target, with ``within_limit`` True; when no β qualifies, the smallest, with
    ``within_limit`` False.
    """
    worst: dict[float, float] = {}
    for row in curve:
        worst[row["beta"]] = max(worst.get(row["beta"], -math.inf), row["ppl_increase"])
    within = [beta for beta, increase in worst.items() if increase <= max_ppl_increase]
    if within:
        return {"beta": max(within), "within_limit": True}
    return {"beta": min(worst), "within_limit": False}


def select_beta(targets: RepairTargets, trust_validation: dict[str, Dataset],
                hh_validation: Dataset, params: RepairParams, eval_params: EvalParams) -> dict:
    """β for the reported repair, chosen on validation data alone (:func:`choose_beta`).

    Each target's subset repairs the post-SFT model with every β of ``beta_grid``; the
    repaired model is scored on the target's validation triples (every aspect's for the
    common subset) and on the HH validation dialogues. Returns the choice, the post-SFT
    reference and the whole curve: rows (β, target, aspect, F_j, perplexity, increase %).
    """
    post = targets.evaluated(targets.model, trust_validation, hh_validation, eval_params)
    curve = []
    for target in targets.gradients:
        aspects = trust_validation if target == COMMON else {target: trust_validation[target]}
        for beta in params.beta_grid:
            result = targets.evaluated(targets.repaired(target, beta), aspects, hh_validation,
                                       eval_params)
            increase = 100 * (result["ppl"] - post["ppl"]) / post["ppl"]
            curve += [{"beta": beta, "target": target, "aspect": aspect,
                       "logodds": result["aspects"][aspect]["logodds"], "ppl": result["ppl"],
                       "ppl_increase": increase} for aspect in aspects]
    return {**choose_beta(curve, params.max_ppl_increase),
            "beta_grid": list(params.beta_grid), "max_ppl_increase": params.max_ppl_increase,
            "post_sft": {"ppl": post["ppl"], "logodds": {
                a: r["logodds"] for a, r in post["aspects"].items()}},
            "n_triples": {a: len(t) for a, t in trust_validation.items()},
            "ppl_dialogues": len(hh_validation), "curve": curve}


def run_repair(exp: Experiment) -> dict:
    """Step 04: choose β on validation data, then repair and evaluate on the test data.

    With ``repair.beta`` None, :func:`select_beta` picks β from validation data alone
    (saved first, as the step's ``beta_selection``); no test split is read before that. Per
    aspect j, the model repaired with S_j is then evaluated on aspect j's test triples
    (Table 1); the model repaired with the common subset on every aspect (Table 2); both
    with HH test perplexity. A β sweep per aspect compares the change of F_j on the trust
    train triples (those the scores were computed for) with the prediction of eq. 6.
    Each repaired model is saved with ``save_pretrained`` as the step's ``model`` of its target.
    """
    p = exp.params

    def compute() -> dict:
        targets = RepairTargets.of_run(exp)
        harm = load_scores(exp)
        selection = None
        if p.repair.beta is None:
            validation = {a: at_most(t, p.repair.validation_triples, p.data.seed)
                          for a, t in exp.data.trust_validation().items()}
            selection = exp.cached(
                REPAIR, exp.output(REPAIR, "beta_selection"),
                lambda: select_beta(targets, validation, exp.data.hh["validation"], p.repair,
                                    p.eval))
        beta = p.repair.beta if selection is None else selection["beta"]
        tests = exp.data.trust_test()
        results: dict = {"beta": beta, "beta_selection": selection,
                         "selector": p.repair.selector, "targets": {}, "sweep": []}
        for target, indices in targets.indices.items():
            repaired = targets.repaired(target, beta)
            evaluated = tests if target == COMMON else {target: tests[target]}
            results["targets"][target] = targets.evaluated(repaired, evaluated, exp.data.hh["test"],
                                                           p.eval)
            save_pretrained(repaired, targets.tokenizer, exp.output(REPAIR, "model", target=target))
            if target == COMMON:
                continue
            # Eq. 6 predicts F_j on the triples the scores were computed on: the train split.
            queries = at_most(exp.data.trust[target]["train"], p.repair.sweep_triples, p.data.seed)
            def logodds(m: PreTrainedModel, queries: Dataset = queries) -> float:
                return trust_logodds(prefix.through(targets.cache, m), targets.tokenizer,
                                     queries, batch_size=p.eval.batch_size,
                                     max_length=p.eval.max_length,
                                     normalized=p.eval.length_normalized).mean

            base = logodds(targets.model)
            for sweep_beta in p.repair.betas:
                measured = logodds(targets.repaired(target, sweep_beta)) - base
                # The scores are those of the mean F_j over all train triples: a subsample
                # measures the same quantity with sampling noise.
                results["sweep"].append({
                    "aspect": target, "beta": sweep_beta, "measured_change": measured,
                    "predicted_change": -sweep_beta * float(harm[target][indices].mean())})
        return results

    def reusable(saved: dict) -> bool:
        return all(has_units(evaluated) for evaluated in saved["targets"].values())

    return exp.cached(REPAIR, exp.output(REPAIR, "result"), compute, reusable=reusable)
