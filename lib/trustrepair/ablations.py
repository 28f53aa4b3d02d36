"""Step 05: what the repair is compared against, on the same post-SFT model (paper §4).

- Table 4: random subsets of the same size with the same PBRF step, against ours; the
  tables report the mean and standard deviation over ``ablations.random_draws`` draws.
- Cheaper rankers: the same PBRF step on the k SFT samples that hidden-state cosine to
  the aspect's opponent texts, or the plain gradient dot product, ranks most detrimental
  (step 02b's rankers, scored on the same trust train triples as EK-FAC): does the
  attribution matter, or would a cheap score repair as well?
- Figure 2: F_j and perplexity across a β grid, DPP subset vs plain top-k (no DPP).
- Baselines: SGA, GA and GA+KL on the aspect's DPP subset, DPO on its trust train pairs.
  With ``ablations.baseline_grid``, each is tried at every (lr, steps) of the grid on the
  validation splits, beside the repair at each β, and reported on test at the point whose
  perplexity cost is closest to the repair's (matched cost): the trade-off figure's points.
- Retraining: the SFT of step 01 rerun without the common subset and, as a control for
  the noise of SFT itself, without as many random SFT samples.

Every variant, the post-SFT reference included, is evaluated on the same (optionally
capped) test triples and HH dialogues, and each evaluation is saved on its own, so an
interrupted step resumes at the first variant it had not finished. The grid's choices
read validation evaluations only.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from functools import cached_property, partial
from typing import Literal

import torch
from datasets import Dataset
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from trustrepair import baselines, dpp, prefix, recovery
from trustrepair.artifacts import atomic_path
from trustrepair.attribution import COMMON, post_sft_dir
from trustrepair.baseline_registry import BASELINES
from trustrepair.data import at_most
from trustrepair.data.trust import outside_templates
from trustrepair.evaluation import evaluate, has_units
from trustrepair.experiment import Experiment
from trustrepair.profiling import phase
from trustrepair.repair import Preconditioner, pbrf_step, subset_gradient
from trustrepair.results import random_draw_name, reported_beta
from trustrepair.selection import load_subsets
from trustrepair.sft import sft_into
from trustrepair.steps import ABLATIONS, SELECTION
from trustrepair.uncertainty import relative_change

PBRF_SELECTORS = {"ours": "dpp", "topk": "topk"}
"""Method name in the tables -> selector of step 03 whose subset the PBRF step uses."""
RETRAINED = {"retrain": "dpp", "retrain_random": "random"}
"""Method name in the tables -> selector of step 03 whose common subset the SFT rerun
leaves out: S itself, and as many random samples (the control for SFT noise)."""


def random_draws(n: int, k: int, seed: int, draws: int) -> dict[str, list[int]]:
    """Method name -> k of the n SFT samples drawn at random with seed ``seed + i``, for
    i < ``draws``; the first is step 03's random subset, the one Table 4 always used. Runs
    whose seeds differ by less than ``draws`` therefore share draws (seeds 0, 1, 2 with 3
    draws each: 5 distinct subsets)."""
    return {random_draw_name(seed + i): dpp.random_k(n, k, seed + i) for i in range(draws)}


def ranker_subsets(exp: Experiment, rankers: Sequence[str],
                   k: int) -> dict[str, dict[str, list[int]]]:
    """Aspect -> ranker -> the k SFT samples the ranker scores most detrimental to the aspect.

    The rankers are step 02b's (:mod:`trustrepair.recovery`), on the post-SFT model and
    the aspect's trust *train* triples, as EK-FAC's scores are: the test triples stay for
    the evaluation alone.
    """
    model, tokenizer = exp.models.load(post_sft_dir(exp))
    scores = {}
    if "hidden_cosine" in rankers:
        scores["hidden_cosine"] = recovery.hidden_cosine_scores(exp, model, tokenizer)
    if "gradient_dot" in rankers:  # last: kronfluence hooks into the model
        scores["gradient_dot"] = recovery.gradient_dot_scores(
            exp, model, tokenizer, exp.output(ABLATIONS, "kronfluence"),
            cache=exp.models.prefix_cache(model, attribution=True))
    return {aspect: {r: dpp.top_k(scores[r][aspect], k) for r in rankers}
            for aspect in exp.data.trust}


class Ablations:
    """The post-SFT model, its subsets and factors, and a cache of evaluated variants."""

    def __init__(self, exp: Experiment):
        p = exp.params
        self.exp, self.p = exp, p
        self.dir = exp.step_dir(ABLATIONS)
        self.preconditioner = Preconditioner.of_run(exp)
        self.subsets: dict[str, dict[str, list[int]]] = {
            target: dict(named) for target, named in load_subsets(exp).indices.items()}
        """target -> name -> SFT indices: step 03's selectors, and any subset added by name."""
        self.model, self.tokenizer = exp.models.load(post_sft_dir(exp))
        self.preconditioner.check_model(self.model)
        # Every variant but the retrained one changes only the tracked blocks.
        self.prefix = exp.models.prefix_cache(self.model)
        self.tests = {a: at_most(t, p.ablations.eval_triples, p.data.seed)
                      for a, t in exp.data.trust_test().items()}
        self.hh_test = at_most(exp.data.hh["test"], p.ablations.ppl_dialogues, p.data.seed)
        self._gradients: dict[tuple[str, str], dict] = {}
        self._runs: dict[tuple[str, str, float], dict[int, dict[str, torch.Tensor]]] = {}
        """(method, aspect, lr) -> steps -> the trained tracked weights (:meth:`baseline`)."""

    @cached_property
    def validation(self) -> tuple[dict[str, Dataset], Dataset]:
        """The (capped) validation triples per aspect and HH validation dialogues that the
        baseline grid is evaluated on."""
        a, seed = self.p.ablations, self.p.data.seed
        triples = {x: at_most(t, a.validation_triples, seed)
                   for x, t in self.exp.data.trust_validation().items()}
        return triples, at_most(self.exp.data.hh["validation"], a.validation_dialogues, seed)

    def evaluated(self, name: str, aspects: list[str],
                  make_model: Callable[[], PreTrainedModel], *, same_prefix: bool = True,
                  split: Literal["test", "validation"] = "test", keep: bool = False) -> dict:
        """Evaluation of one variant on ``aspects`` (+ perplexity) of ``split``, computed once.

        ``same_prefix``: the variant differs from the post-SFT model only in the tracked
        blocks, so it reads the states below them from the prefix cache; with ``keep``,
        those blocks are saved as the step's ``variant`` of ``name``, for step 08 to score
        on the held-out benchmarks. ``eval`` names the saved file, relative to the step
        folder: the tables' confidence intervals read its per-item values.
        """
        triples, dialogues = ((self.tests, self.hh_test) if split == "test"
                              else self.validation)
        variant = self.exp.output(ABLATIONS, "variant", name=name) if keep else None

        def compute() -> dict:
            model = make_model()
            if variant is not None:
                with atomic_path(variant) as tmp:
                    save_file(self._tracked_weights(model), str(tmp))
            return evaluate(prefix.through(self.prefix if same_prefix else None, model),
                            self.tokenizer, {a: triples[a] for a in aspects}, dialogues,
                            self.p.eval)

        def reusable(saved: dict) -> bool:
            return has_units(saved) and (variant is None or variant.exists())

        path = self.exp.output(ABLATIONS, "evaluation" if split == "test"
                               else "validation_evaluation", name=name)
        names = {"eval": path.relative_to(self.dir).as_posix()}
        if variant is not None:
            names["variant"] = variant.relative_to(self.dir).as_posix()
        return {**self.exp.cached(ABLATIONS, path, compute, reusable=reusable), **names}

    def subset(self, target: str, selector: str) -> Dataset:
        return self.exp.data.hh["train"].select(self.subsets[target][selector])

    def outside(self, excluded: list[int]) -> Dataset:
        """The SFT train samples not in ``excluded``, in their order."""
        skip, train = set(excluded), self.exp.data.hh["train"]
        return train.select([i for i in range(len(train)) if i not in skip])

    def pbrf(self, target: str, selector: str, beta: float) -> PreTrainedModel:
        """The post-SFT model after one PBRF step on a named subset (gradient reused)."""
        key = (target, selector)
        if key not in self._gradients:
            self._gradients[key] = subset_gradient(
                self.model, self.tokenizer, self.subset(target, selector),
                self.preconditioner.modules, max_length=self.p.sft.max_length,
                batch_size=self.p.attribution.train_batch_size, cache=self.prefix,
                loss_reduction=self.p.repair_loss_reduction)
        return pbrf_step(self.model, self.preconditioner, self._gradients[key], beta)

    def baseline(self, method: str, aspect: str, lr: float, steps: int) -> PreTrainedModel:
        """A baseline of the paper's ablation at learning rate ``lr`` for ``steps`` updates.

        Each run is trained once: the weights of its tracked modules (all that a baseline
        changes) are kept, so the matched point's test evaluation reuses the grid's run. A
        baseline with ``nested_steps`` runs to its grid's most steps and keeps every grid
        point of that learning rate on the way.
        """
        runs = self._runs.setdefault((method, aspect, lr), {})
        if steps not in runs:
            self._train(method, aspect, lr, steps, runs)
        model = copy.deepcopy(self.model)
        model.load_state_dict(runs[steps], strict=False)
        return model

    def _train(self, method: str, aspect: str, lr: float, steps: int,
               runs: dict[int, dict[str, torch.Tensor]]) -> None:
        """Train ``method`` into ``runs`` (steps -> tracked weights): ``steps``, and with
        nested steps every grid point of ``lr`` up to the grid's most."""
        grid = self.p.ablations.baseline_grid.get(method)
        on_grid = grid is not None and lr in grid.lr  # a refined lr needs its one step count
        keep = {steps, *(grid.steps if on_grid and BASELINES[method].nested_steps else ())}
        budget = {"lr": lr, "steps": max(keep), "max_length": self.p.sft.max_length,
                  "seed": self.p.seed}
        if BASELINES[method].trains_through_prefix:
            budget["cache"] = self.prefix
        if BASELINES[method].nested_steps:
            def on_step(n: int, trained: nn.Module) -> None:
                if n in keep:
                    runs[n] = self._tracked_weights(trained)
            budget["on_step"] = on_step
        with phase(f"training: {method}"):
            runs[max(keep)] = self._tracked_weights(TRAINERS[method](self, aspect, **budget))

    def _tracked_weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Copies of the tracked modules' parameters, by their names in the model."""
        named = dict(model.named_modules())
        return {f"{module}.{name}": param.detach().clone()
                for module in self.preconditioner.modules
                for name, param in named[module].named_parameters()}

    def keep_runs(self, aspect: str, matched: dict[str, dict]) -> None:
        """Forget the aspect's baseline runs but the matched ones, which test evaluates."""
        self._runs = {(method, a, lr): {n: w for n, w in runs.items()
                                        if a != aspect or matched[method] == {"lr": lr,
                                                                              "steps": n}}
                      for (method, a, lr), runs in self._runs.items()}

    def retained(self, aspect: str) -> Dataset:
        """SFT samples outside the aspect's subset, for the KL term of GA+KL."""
        return at_most(self.outside(self.subsets[aspect]["dpp"]),
                       self.p.ablations.retain_samples, self.p.data.seed)

    def retrain(self, method: str) -> PreTrainedModel:
        """SFT from the base model without the common subset of ``RETRAINED[method]``'s
        selector (the slow counterfactual, or its random control), into the step's
        ``retrained`` folder of ``method``."""
        kept = self.outside(self.subsets[COMMON][RETRAINED[method]])
        # Keyed on what the retraining depends on (data, SFT and the subset: steps 01-03),
        # so changing an ablation setting does not retrain.
        folder = self.exp.output(ABLATIONS, "retrained", method=method)
        model_dir, _ = sft_into(self.exp, kept, SELECTION, folder)
        return self.exp.models.load(model_dir)[0]


Trainer = Callable[..., PreTrainedModel]
"""``(ablations, aspect, *, lr, steps, max_length, seed[, cache][, on_step]) -> trained
copy``; ``on_step`` only for a baseline with ``nested_steps``."""
TRAINERS: dict[str, Trainer] = {}
"""Baseline name (:mod:`trustrepair.baseline_registry`) -> how step 05 trains it."""


def trains(method: str) -> Callable[[Trainer], Trainer]:
    """Register the decorated function as how step 05 trains the baseline ``method``."""
    if method not in BASELINES:
        raise ValueError(f"{method!r} is not in trustrepair.baseline_registry: add its entry "
                         f"there first")

    def register(train: Trainer) -> Trainer:
        TRAINERS[method] = train
        return train
    return register


@trains("sga")
def _sga(abl: Ablations, aspect: str, **budget) -> PreTrainedModel:
    return baselines.gradient_ascent(abl.model, abl.tokenizer, abl.subset(aspect, "dpp"),
                                     abl.preconditioner.modules,
                                     batch_size=abl.p.ablations.sga_batch_size,
                                     loss_reduction=abl.p.repair_loss_reduction, **budget)


@trains("ga")
def _ga(abl: Ablations, aspect: str, **budget) -> PreTrainedModel:
    return baselines.gradient_ascent(abl.model, abl.tokenizer, abl.subset(aspect, "dpp"),
                                     abl.preconditioner.modules, batch_size=None,
                                     loss_reduction=abl.p.repair_loss_reduction, **budget)


@trains("ga_kl")
def _ga_kl(abl: Ablations, aspect: str, **budget) -> PreTrainedModel:
    return baselines.gradient_ascent_kl(
        abl.model, abl.tokenizer, abl.subset(aspect, "dpp"), abl.retained(aspect),
        abl.preconditioner.modules, kl_weight=abl.p.ablations.kl_weight, batch_size=None,
        loss_reduction=abl.p.repair_loss_reduction, **budget)


@trains("dpo")
def _dpo(abl: Ablations, aspect: str, **budget) -> PreTrainedModel:
    a, splits = abl.p.ablations, abl.exp.data.trust[aspect]
    pairs = (outside_templates(aspect, splits["train"], splits["test"])
             if a.dpo_test_templates == "exclude" else splits["train"])
    if not len(pairs):
        raise ValueError(f"every {aspect} train pair shares a template with the test split, "
                         f"so DPO has nothing to train on: set ablations.dpo_test_templates: "
                         f"keep")
    pairs = at_most(pairs, a.dpo_pairs, abl.p.data.seed)
    pairs = Dataset.from_dict({"prompt": pairs["prompt"], "chosen": pairs["proponent"],
                               "rejected": pairs["opponent"]})
    return baselines.dpo(abl.model, abl.tokenizer, pairs, abl.preconditioner.modules,
                         beta=a.dpo_beta, batch_size=a.sga_batch_size,
                         output_dir=abl.exp.output(ABLATIONS, "dpo"), **budget)


def matched_point(points: list[dict], cost: float) -> dict:
    """The point whose perplexity change (``rel_change_ppl``) is closest to ``cost``; of
    equally close points, the one with the smallest budget lr × steps."""
    if not points:
        raise ValueError("a matched point needs one or more grid points")
    return min(points, key=lambda q: (abs(_cost(q) - cost), q["lr"] * q["steps"]))


def _cost(point: dict) -> float:
    """A point's perplexity change; a perplexity that overflowed costs without bound."""
    value = point["rel_change_ppl"]
    return value if math.isfinite(value) else -math.inf


def refine_to_cost(points: list[dict], cost: float, tried_at: Callable[[float, int], dict],
                   *, tolerance: float, tries: int) -> dict:
    """Try more learning rates until some point's perplexity change is within ``tolerance``
    points of ``cost``, at most ``tries`` of them; returns whether ``cost`` ended bracketed
    and the learning rates added.

    They are tried at the step count of the nearest grid point. While the points at that
    count all lie on one side of ``cost``, the learning rate goes a grid ratio beyond the
    end that is nearer it; once one point lies at or below ``cost`` and one at or above,
    the next is the geometric mean of the two adjacent learning rates that bracket it.
    ``tried_at(lr, steps)`` trains and evaluates one point; it is added to ``points``.
    """
    steps = matched_point(points, cost)["steps"]
    added: list[float] = []

    def line() -> list[dict]:
        return sorted((q for q in points if q["steps"] == steps), key=lambda q: q["lr"])

    def bracket() -> tuple[dict, dict] | None:
        on_line = line()
        pairs = [(a, b) for a, b in zip(on_line, on_line[1:], strict=False)
                 if (_cost(a) - cost) * (_cost(b) - cost) <= 0]
        return min(pairs, key=lambda ab: min(abs(_cost(q) - cost) for q in ab), default=None)

    while len(added) < tries and abs(_cost(matched_point(points, cost)) - cost) > tolerance:
        pair, on_line = bracket(), line()
        if pair is not None:
            lr = math.sqrt(pair[0]["lr"] * pair[1]["lr"])
        else:
            low, high = on_line[0], on_line[-1]
            ratio = (high["lr"] / low["lr"]) ** (1 / (len(on_line) - 1)) if len(on_line) > 1 \
                else 10.0
            up = abs(_cost(high) - cost) <= abs(_cost(low) - cost)
            lr = high["lr"] * ratio if up else low["lr"] / ratio
        points.append(tried_at(lr, steps))
        added.append(lr)
    return {"bracketed": bracket() is not None, "added_lr": added, "steps": steps}


def tradeoff(abl: Ablations, aspects: list[str],
             beta: float) -> tuple[list[dict], dict, dict]:
    """Validation trade-off of the repair (each β of ``ablations.betas`` and the reported
    β) and of each baseline's grid, refined towards the repair's cost
    (:func:`refine_to_cost`); aspect -> method -> the matched (lr, steps); and aspect ->
    method -> how the refinement went.

    Everything here is measured on the validation splits, so the choice of each
    baseline's hyperparameters never sees the test data the tables report.
    """
    a = abl.p.ablations
    post = abl.evaluated("post_sft", aspects, lambda: abl.model, split="validation")
    points: list[dict] = []

    def point(method: str, aspect: str, setting: dict, result: dict) -> dict:
        before, after = post["aspects"][aspect]["logodds"], result["aspects"][aspect]["logodds"]
        points.append({"aspect": aspect, "method": method, **setting, "eval": result["eval"],
                       "logodds": after, "ppl": result["ppl"],
                       "rel_change_logodds": relative_change(before, after),
                       "rel_change_ppl": relative_change(post["ppl"], result["ppl"])})
        return points[-1]

    def baseline_point(method: str, aspect: str, lr: float, steps: int) -> dict:
        result = abl.evaluated(f"{method}_{aspect}_lr{lr:g}_steps{steps}", [aspect],
                               partial(abl.baseline, method, aspect, lr, steps),
                               split="validation")
        return point(method, aspect, {"lr": lr, "steps": steps}, result)

    matched: dict[str, dict[str, dict]] = {}
    matching: dict[str, dict[str, dict]] = {}
    for aspect in aspects:
        for b in sorted({*a.betas, beta}):
            result = abl.evaluated(f"pbrf_dpp_{aspect}_beta{b:g}", [aspect],
                                   partial(abl.pbrf, aspect, "dpp", b), split="validation")
            point("ours", aspect, {"beta": b}, result)
        cost = next(q["rel_change_ppl"] for q in points
                    if q["aspect"] == aspect and q["method"] == "ours" and q["beta"] == beta)
        matched[aspect], matching[aspect] = {}, {}
        for method in a.methods:
            grid, tried_at = a.baseline_grid[method], partial(baseline_point, method, aspect)
            tried = [tried_at(lr, steps) for lr, steps in tqdm(
                [(lr, n) for lr in grid.lr for n in grid.steps], desc=f"{method} grid: {aspect}")]
            matching[aspect][method] = refine_to_cost(
                tried, cost, tried_at, tolerance=a.match_tolerance, tries=a.match_refinements)
            chosen = matched_point(tried, cost)
            matched[aspect][method] = {"lr": chosen["lr"], "steps": chosen["steps"]}
        abl.keep_runs(aspect, matched[aspect])
    return points, matched, matching


def run_ablations(exp: Experiment) -> dict:
    """Evaluate every comparison; the rows the tables and figures read, saved as JSON."""
    return exp.cached(ABLATIONS, exp.output(ABLATIONS, "result"), lambda: _compare(exp))


def _compare(exp: Experiment) -> dict:
    p, a = exp.params, exp.params.ablations
    abl = Ablations(exp)
    beta = reported_beta(exp.params)
    aspects = list(abl.tests)
    ids = exp.data.hh["train"]["id"]
    # A random draw is one subset, so one repaired model, for every aspect.
    draws = random_draws(len(ids), p.selection.k, p.seed, a.random_draws)
    ranked = ranker_subsets(exp, a.rankers, p.selection.k) if a.rankers else {}
    added = {COMMON: draws, **ranked}
    for target, named in added.items():
        abl.subsets[target].update(named)
    points, matched, matching = (tradeoff(abl, aspects, beta) if a.baseline_grid
                                 else ([], {}, {}))
    post = abl.evaluated("post_sft", aspects, lambda: abl.model)
    rows, grid = [], []

    def add(method: str, aspect: str, result: dict, setting: str = "") -> None:
        rows.append({"aspect": aspect, "method": method, "setting": setting,
                     "eval": result["eval"], "logodds": result["aspects"][aspect]["logodds"],
                     "ppl": result["ppl"]})
        if "variant" in result:
            rows[-1]["variant"] = result["variant"]

    pbrf_subsets = {**PBRF_SELECTORS, **{name: name for name in a.rankers}}
    methods = (*PBRF_SELECTORS, *draws, *a.rankers, *a.methods)
    jobs = [(aspect, m) for aspect in aspects for m in methods]
    for aspect, method in tqdm(jobs, desc="ablations"):
        setting = f"β {beta:g}"
        if method in draws:  # evaluated on every aspect at its first aspect, then read back
            result = abl.evaluated(f"pbrf_{method}_beta{beta:g}", aspects,
                                   partial(abl.pbrf, COMMON, method, beta), keep=True)
        elif method in pbrf_subsets:
            selector = pbrf_subsets[method]
            result = abl.evaluated(f"pbrf_{selector}_{aspect}_beta{beta:g}", [aspect],
                                   partial(abl.pbrf, aspect, selector, beta), keep=True)
        else:
            lr, steps = (a.lr, a.steps) if not matched else (
                matched[aspect][method]["lr"], matched[aspect][method]["steps"])
            setting = f"lr {lr:g}, steps {steps}"
            result = abl.evaluated(f"{method}_{aspect}_lr{lr:g}_steps{steps}", [aspect],
                                   partial(abl.baseline, method, aspect, lr, steps), keep=True)
        add(method, aspect, result, setting)
    for aspect in aspects:
        for selector in ("dpp", "topk"):
            for b in tqdm(a.betas, desc=f"figure 2: {aspect}, {selector}"):
                result = abl.evaluated(f"pbrf_{selector}_{aspect}_beta{b:g}", [aspect],
                                       partial(abl.pbrf, aspect, selector, b))
                grid.append({"aspect": aspect, "selector": selector, "beta": b,
                             "eval": result["eval"],
                             "logodds": result["aspects"][aspect]["logodds"],
                             "ppl": result["ppl"]})
    retrained = {}
    if a.retrain:
        for method in RETRAINED if a.retrain_control else ["retrain"]:
            result = abl.evaluated(method, aspects, partial(abl.retrain, method),
                                   same_prefix=False)
            for aspect in aspects:
                add(method, aspect, result)
            excluded = abl.subsets[COMMON][RETRAINED[method]]
            retrained[method] = {"excluded_ids": [ids[i] for i in excluded]}
    for row in rows:
        row["rel_change_logodds"] = relative_change(post["aspects"][row["aspect"]]["logodds"],
                                                    row["logodds"])
        row["rel_change_ppl"] = relative_change(post["ppl"], row["ppl"])
    return {"beta": beta, "post_sft": {"eval": post["eval"], "ppl": post["ppl"], "logodds": {
                x: post["aspects"][x]["logodds"] for x in aspects}},
            "n_triples": {x: len(t) for x, t in abl.tests.items()},
            "ppl_dialogues": len(abl.hh_test), "rows": rows, "grid": grid,
            "tradeoff": points, "matched": matched, "matching": matching,
            "k": p.selection.k, "random_draws": list(draws),
            "subsets": {target: {name: [ids[i] for i in picked] for name, picked in named.items()}
                        for target, named in added.items()},
            "retrained": retrained}
