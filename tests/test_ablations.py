"""Step 05: what it refuses to start without, the subsets its extra rows repair with, the
retraining control, and how the random draws show in the tables."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from trustrepair import ablations, dpp, recovery
from trustrepair.ablations import Ablations, random_draws, ranker_subsets, run_ablations
from trustrepair.attribution import COMMON, post_sft_dir, run_attribution
from trustrepair.experiment import Experiment
from trustrepair.models import save_pretrained
from trustrepair.report import ablation_table, change_intervals, mean_change_intervals
from trustrepair.selection import load_subsets, run_selection
from trustrepair.steps import SELECTION
from trustrepair.timing import run_timing

from .conftest import smoke_params
from .test_report import BOOTSTRAP, _evaluation


def test_ablations_need_the_factors_of_step_02(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="attribution.json"):
        run_ablations(Experiment(smoke_params(tmp_path)))


def test_timing_needs_the_retraining_of_step_05(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ablations.retrain: true"):
        run_timing(Experiment(smoke_params(tmp_path)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A smoke run through step 03, the base model standing in for the post-SFT one."""
    tmp = tmp_path_factory.mktemp("ablations")
    exp = Experiment(smoke_params(tmp))
    save_pretrained(*exp.models.load(), exp.run_dir / "01_sft" / "model")
    run_attribution(exp)
    run_selection(exp)
    return tmp


def _experiment(tmp: Path, **overrides) -> Experiment:
    return Experiment(smoke_params(tmp, **{"repair.beta": 0.01, **overrides}))


class _NoTestSplit(dict):
    """Splits of a dataset without its test split: reading that fails the test."""

    def __getitem__(self, split: str):
        if split == "test":
            raise AssertionError("a test split was read")
        return super().__getitem__(split)


def _without_test_splits(exp: Experiment) -> Experiment:
    exp.data.trust = {a: _NoTestSplit({k: v for k, v in s.items() if k != "test"})
                 for a, s in exp.data.trust.items()}
    exp.data.hh = _NoTestSplit({k: v for k, v in exp.data.hh.items() if k != "test"})
    return exp


def test_ranker_subsets_are_top_k_of_train_split_scores(run_dir: Path) -> None:
    exp = _without_test_splits(_experiment(run_dir))
    k = exp.params.selection.k
    picked = ranker_subsets(exp, ("hidden_cosine", "gradient_dot"), k)
    model, tokenizer = exp.models.load(post_sft_dir(exp))
    scores = {"hidden_cosine": recovery.hidden_cosine_scores(exp, model, tokenizer),
              "gradient_dot": recovery.gradient_dot_scores(
                  exp, model, tokenizer, run_dir / "runs" / "smoke" / "05_ablations" /
                  "kronfluence")}
    assert set(picked) == set(exp.data.trust)
    for aspect, by_ranker in picked.items():
        assert list(by_ranker) == ["hidden_cosine", "gradient_dot"]
        for ranker, indices in by_ranker.items():
            assert len(set(indices)) == len(indices) == k
            assert indices == dpp.top_k(scores[ranker][aspect], k)
    assert list(ranker_subsets(exp, ("gradient_dot",), k)["truthfulness"]) == ["gradient_dot"]


def test_random_draws_differ_and_the_first_is_table_4s(run_dir: Path) -> None:
    exp = _experiment(run_dir)
    n, k = len(exp.data.hh["train"]), exp.params.selection.k
    draws = random_draws(n, k, seed=exp.params.seed, draws=3)
    assert list(draws) == ["random_seed0", "random_seed1", "random_seed2"]
    assert all(len(set(d)) == k and all(0 <= i < n for i in d) for d in draws.values())
    assert len({frozenset(d) for d in draws.values()}) == 3, "three different subsets"
    for picked in load_subsets(exp).of("random").values():
        assert picked == draws["random_seed0"]
    assert list(random_draws(n, k, seed=5, draws=2)) == ["random_seed5", "random_seed6"]


def test_the_retrain_control_leaves_out_k_random_samples_other_than_s(run_dir: Path,
                                                                     monkeypatch) -> None:
    exp = _experiment(run_dir)
    trained = {}

    def fake_sft(exp_, train, step, out_dir):
        trained[out_dir.name] = (set(train["id"]), step)
        return post_sft_dir(exp), {}

    monkeypatch.setattr(ablations, "sft_into", fake_sft)
    abl = Ablations(exp)
    for method in ("retrain", "retrain_random"):
        abl.retrain(method)
    every = set(exp.data.hh["train"]["id"])
    k = exp.params.selection.k
    common_ids = load_subsets(exp).ids[COMMON]
    left_out = {method: every - kept for method, (kept, _) in trained.items()}
    assert {method: step for method, (_, step) in trained.items()} == {
        "retrain": SELECTION, "retrain_random": SELECTION}, "keyed on steps 01-03, own folders"
    assert left_out["retrain"] == set(common_ids["dpp"])
    assert len(left_out["retrain_random"]) == k
    assert left_out["retrain_random"] == set(common_ids["random"])
    assert left_out["retrain_random"] != left_out["retrain"]


@pytest.mark.parametrize(("overrides", "retrained"), [
    ({}, {"retrain", "retrain_random"}),
    ({"ablations.retrain_control": False}, {"retrain"}),
    ({"ablations.retrain": False}, set()),
])
def test_step_05_repairs_each_new_subset_and_retrains_as_asked(
        run_dir: Path, monkeypatch, overrides: dict, retrained: set) -> None:
    evaluated = []

    def fake_evaluation(self, name, aspects, make_model, *, same_prefix=True, keep=False):
        evaluated.append(name)
        return {"aspects": {a: {"logodds": 0.5} for a in aspects}, "ppl": 2.0,
                "eval": f"evals/{name}.json"}

    def no_sft(*args, **kwargs):
        raise AssertionError("the evaluation is faked: nothing should train")

    monkeypatch.setattr(Ablations, "evaluated", fake_evaluation)
    monkeypatch.setattr(ablations, "sft_into", no_sft)
    exp = _experiment(run_dir, **{"ablations.methods": ["ga"], **overrides})
    result = ablations._compare(exp)
    k, aspects = exp.params.selection.k, list(exp.data.trust)
    methods = {"ours", "topk", "random_seed0", "random_seed1", "random_seed2", "hidden_cosine",
               "gradient_dot", "ga"} | retrained
    assert {(r["aspect"], r["method"]) for r in result["rows"]} == {
        (a, m) for a in aspects for m in methods}
    assert result["random_draws"] == ["random_seed0", "random_seed1", "random_seed2"]
    assert result["k"] == k
    subsets = result["subsets"]
    assert list(subsets) == [COMMON, *aspects]
    assert list(subsets[COMMON]) == result["random_draws"], "one draw for every aspect"
    for aspect in aspects:
        assert list(subsets[aspect]) == ["hidden_cosine", "gradient_dot"]
        assert f"pbrf_gradient_dot_{aspect}_beta0.01" in evaluated
    assert all(len(set(ids)) == len(ids) == k for named in subsets.values()
               for ids in named.values())
    assert [name for name in evaluated if name.startswith("pbrf_random")] == [
        "pbrf_random_seed0_beta0.01", "pbrf_random_seed1_beta0.01",
        "pbrf_random_seed2_beta0.01"] * len(aspects), "each draw's model evaluated by name"
    assert set(result["retrained"]) == retrained
    assert all(len(r["excluded_ids"]) == k for r in result["retrained"].values())


def test_the_random_row_is_the_mean_and_spread_of_the_draws() -> None:
    post = _evaluation({"truthfulness": [0.4, 0.6, 0.5, 0.3]}, [2.0, 2.2, 2.1, 2.3])
    evals = {"evals/post.json": post,
             "evals/ours.json": _evaluation({"truthfulness": [0.3, 0.5, 0.4, 0.3]},
                                            [2.0, 2.2, 2.1, 2.3])}
    shifts = {"random_seed0": 0.01, "random_seed1": -0.03, "random_seed2": 0.05}
    for name, shift in shifts.items():
        evals[f"evals/{name}.json"] = _evaluation(
            {"truthfulness": [0.4 - shift, 0.6, 0.5 - 2 * shift, 0.3]},
            [2.0 + shift, 2.2, 2.1, 2.3 + shift])
    rows = []
    for method in ("ours", *shifts):
        ev = evals[f"evals/{method}.json"]
        rows.append({"aspect": "truthfulness", "method": method, "eval": f"evals/{method}.json",
                     "logodds": ev["aspects"]["truthfulness"]["logodds"],
                     "rel_change_logodds": 100 * (post["aspects"]["truthfulness"]["logodds"] -
                                                  ev["aspects"]["truthfulness"]["logodds"]) /
                     abs(post["aspects"]["truthfulness"]["logodds"]),
                     "rel_change_ppl": 100 * (post["ppl"] - ev["ppl"]) / post["ppl"]})
    result = {"post_sft": {"eval": "evals/post.json"}, "rows": rows,
              "random_draws": list(shifts)}
    table = ablation_table(result, evals, BOOTSTRAP).set_index("method")
    assert list(table.index) == ["ours", "random", *shifts], "the mean before its draws"
    draws = table.loc[list(shifts)]
    assert draws.rel_change_logodds.nunique() == 3, "the draws differ"
    random = table.loc["random"]
    intervals = mean_change_intervals(post, [evals[f"evals/{m}.json"] for m in shifts],
                                      "truthfulness", BOOTSTRAP)
    for name in ("delta_logodds", "rel_change_logodds", "rel_change_ppl"):
        assert random[name] == pytest.approx(draws[name].mean())
        assert random[f"{name}_std"] == pytest.approx(np.std(draws[name], ddof=1))
        assert (random[f"{name}_ci_low"], random[f"{name}_ci_high"]) == (
            intervals[f"{name}_ci_low"], intervals[f"{name}_ci_high"])
        assert random[f"{name}_ci_low"] <= random[name] <= random[f"{name}_ci_high"]
        assert table.drop(index="random")[f"{name}_std"].isna().all(), "one spread: random's"
    # Of one model, the interval of the mean is that model's own.
    one = mean_change_intervals(post, [evals["evals/random_seed1.json"]], "truthfulness",
                                BOOTSTRAP)
    own = change_intervals(post, evals["evals/random_seed1.json"], "truthfulness", BOOTSTRAP)
    assert one == {key: own[key] for key in one}
    assert (table.loc["random_seed1", "rel_change_ppl_ci_low"] ==
            own["rel_change_ppl_ci_low"])


def test_the_matched_point_is_the_closest_in_perplexity_then_the_cheapest() -> None:
    from trustrepair.ablations import matched_point

    points = [{"lr": lr, "steps": steps, "rel_change_ppl": ppl}
              for lr, steps, ppl in [(1e-3, 5, -0.1), (1e-2, 5, -2.0), (1e-3, 20, -0.75),
                                     (1e-4, 20, -1.25)]]
    assert matched_point(points, -1.0)["lr"] == 1e-4, "equally close: the smaller lr × steps"
    assert matched_point(points, -5.0)["lr"] == 1e-2
    assert matched_point(points, 0.3)["steps"] == 5
    with pytest.raises(ValueError, match="one or more grid points"):
        matched_point([], 0.0)


def _refined(cost_of, grid: list[float], target: float, **options) -> tuple[dict, list[dict]]:
    """:func:`refine_to_cost` on a made-up cost curve of the learning rate."""
    points = [{"lr": lr, "steps": 5, "rel_change_ppl": cost_of(lr)} for lr in grid]
    return ablations.refine_to_cost(
        points, target, lambda lr, steps: {"lr": lr, "steps": steps,
                                           "rel_change_ppl": cost_of(lr)},
        **{"tolerance": 0.25, "tries": 4, **options}), points


def test_a_grid_that_misses_the_cost_is_extended_then_bisected_in_lr() -> None:
    """The grid ends at -1.0, short of the repair's -3.0: one grid ratio further brackets
    it, then the geometric mean lands within the tolerance."""
    refined, points = _refined(lambda lr: -1e4 * lr, [1e-5, 1e-4], -3.0)
    assert refined["added_lr"] == pytest.approx([1e-3, 10 ** -3.5])
    assert refined["bracketed"] and refined["steps"] == 5
    assert ablations.matched_point(points, -3.0)["lr"] == pytest.approx(10 ** -3.5)
    below, _ = _refined(lambda lr: -1e4 * lr, [1e-4, 1e-3], -0.05)
    assert below["added_lr"] == pytest.approx([1e-5]), "extended at the end nearer the cost"


def test_refining_stops_at_the_tolerance_or_after_its_tries() -> None:
    close, _ = _refined(lambda lr: -1e4 * lr, [1e-5, 1e-4], -1.2)
    assert close["added_lr"] == [] and not close["bracketed"], "-1.0 is within 0.25 already"
    flat, _ = _refined(lambda lr: -0.1, [1e-5, 1e-4], -3.0, tries=3)
    assert len(flat["added_lr"]) == 3 and not flat["bracketed"]
    none, _ = _refined(lambda lr: -1e4 * lr, [1e-5, 1e-4], -3.0, tries=0)
    assert none["added_lr"] == []


def test_a_perplexity_that_overflowed_brackets_from_beyond() -> None:
    """Past some lr the loss diverges (perplexity inf, its change -inf or nan): that
    point lies beyond any cost, so refinement bisects towards the grid."""
    refined, points = _refined(lambda lr: -1e4 * lr if lr < 1e-3 else float("nan"),
                               [1e-5, 1e-4, 1e-2], -3.0, tries=8)
    assert refined["bracketed"]
    assert abs(ablations.matched_point(points, -3.0)["rel_change_ppl"] + 3.0) <= 0.25
    assert all(lr < 1e-2 for lr in refined["added_lr"])


def test_dpo_trains_on_no_stereotype_template_of_the_test_split(run_dir: Path,
                                                                 monkeypatch) -> None:
    from trustrepair.data.trust import shared_templates

    aspect = "stereotypical_bias"
    abl = Ablations(_experiment(run_dir, **{"ablations.dpo_test_templates": "exclude"}))
    splits = abl.exp.data.trust[aspect]
    trained = []
    monkeypatch.setattr(ablations.baselines, "dpo",
                        lambda model, tokenizer, pairs, *args, **kwargs: trained.append(pairs))
    with pytest.raises(ValueError, match="dpo_test_templates: keep"):
        ablations.TRAINERS["dpo"](abl, aspect, lr=1e-3, steps=1, max_length=64, seed=0)
    topic = shared_templates(splits["test"]["group"][0])  # test only one topic of the two
    monkeypatch.setitem(splits, "test", splits["test"].filter(
        lambda group: shared_templates(group) == topic, input_columns="group"))
    ablations.TRAINERS["dpo"](abl, aspect, lr=1e-3, steps=1, max_length=64, seed=0)
    untested = {o for o, g in zip(splits["train"]["opponent"], splits["train"]["group"],
                                  strict=True) if shared_templates(g) != topic}
    assert trained and set(trained[0]["rejected"]) <= untested
    assert len(trained[0]) == min(len(untested) * 3, abl.p.ablations.dpo_pairs)


class _Poisoned(dict):
    def __getitem__(self, key):
        raise AssertionError("a test split was read while choosing")


def test_the_baseline_grid_is_chosen_on_validation_data_only(run_dir: Path) -> None:
    grid = {"lr": [1e-3, 1e-1], "steps": [1, 2]}
    exp = _experiment(run_dir, **{"ablations.methods": ["ga", "sga"],
                                  "ablations.baseline_grid": {"ga": grid, "sga": grid},
                                  "ablations.validation_triples": 4,
                                  "ablations.validation_dialogues": 4})
    abl = Ablations(exp)
    abl.tests, abl.hh_test = _Poisoned(), None
    aspects = list(exp.data.trust)
    points, matched, matching = ablations.tradeoff(abl, aspects, 0.01)
    assert all(p["eval"].startswith("evals/validation/") for p in points)
    betas = {*exp.params.ablations.betas, 0.01}
    added = sum(len(m["added_lr"]) for by_method in matching.values()
                for m in by_method.values())
    assert len(points) == len(aspects) * (len(betas) + 2 * 4) + added
    for aspect in aspects:
        cost = next(p["rel_change_ppl"] for p in points
                    if (p["aspect"], p["method"], p.get("beta")) == (aspect, "ours", 0.01))
        for method in ("ga", "sga"):
            tried = [p for p in points if (p["aspect"], p["method"]) == (aspect, method)]
            refined = matching[aspect][method]
            assert {(p["lr"], p["steps"]) for p in tried} == {
                (a, b) for a in grid["lr"] for b in grid["steps"]} | {
                (lr, refined["steps"]) for lr in refined["added_lr"]}
            best = min(abs(p["rel_change_ppl"] - cost) for p in tried)
            chosen = matched[aspect][method]
            assert abs(next(p["rel_change_ppl"] for p in tried if {"lr": p["lr"],
                       "steps": p["steps"]} == chosen) - cost) == best
    assert len({p["rel_change_ppl"] for p in points if p["method"] == "ga"}) > 1, \
        "the grid's points differ in cost"


def test_a_grid_trains_each_learning_rate_once_and_test_reuses_the_matched_run(
        run_dir: Path, monkeypatch) -> None:
    """SGD baselines run once to the grid's most steps per lr (keeping the shorter point on
    the way); DPO once per point; the matched point's test evaluation trains nothing. The
    models it gives are those of separate runs, bit for bit."""
    grid = {"lr": [1e-3, 1e-1], "steps": [1, 2]}
    exp = _experiment(run_dir, **{"ablations.methods": ["ga", "dpo"], "ablations.retrain": False,
                                  "ablations.baseline_grid": {"ga": grid, "dpo": grid},
                                  "ablations.validation_triples": 4,
                                  "ablations.validation_dialogues": 4,
                                  "ablations.match_refinements": 0,
                                  "ablations.eval_triples": 4, "ablations.ppl_dialogues": 4})
    trained = []
    for method in ("ga", "dpo"):
        train = ablations.TRAINERS[method]
        monkeypatch.setitem(ablations.TRAINERS, method, lambda abl, aspect, train=train,
                            method=method, **budget: trained.append(
                                (method, aspect, budget["lr"], budget["steps"]))
                            or train(abl, aspect, **budget))
    abl = Ablations(exp)
    aspects = list(exp.data.trust)[:1]
    _, matched, _ = ablations.tradeoff(abl, aspects, 0.01)
    assert sorted(trained) == sorted([("ga", a, lr, 2) for a in aspects for lr in grid["lr"]]
                                     + [("dpo", a, lr, n) for a in aspects
                                        for lr in grid["lr"] for n in grid["steps"]])
    trained.clear()
    models = {(aspect, method): abl.baseline(method, aspect, point["lr"], point["steps"])
              for aspect in aspects for method, point in matched[aspect].items()}
    assert not trained, "a matched run was trained again"
    for (aspect, method), model in models.items():
        point = matched[aspect][method]
        alone = ablations.TRAINERS[method](abl, aspect, lr=point["lr"], steps=point["steps"],
                                           max_length=64, seed=0,
                                           **({"cache": abl.prefix} if method == "ga" else {}))
        assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(),
                                                     alone.state_dict().values(), strict=True))


def test_step_05_reports_each_baseline_at_its_matched_point(run_dir: Path, monkeypatch) -> None:
    def fake_evaluation(self, name, aspects, make_model, *, same_prefix=True, split="test",
                        keep=False):
        # On validation, cost grows with lr; on test the reverse, so a choice made on test
        # data would pick another point.
        lr = float(name.split("_lr")[1].split("_")[0]) if "_lr" in name else 1e-3
        ppl = 2.0 + (lr if split == "validation" else -lr)
        return {"aspects": {a: {"logodds": 0.5} for a in aspects}, "ppl": ppl,
                "eval": f"evals/{split}/{name}.json"}

    monkeypatch.setattr(Ablations, "evaluated", fake_evaluation)
    exp = _experiment(run_dir, **{"ablations.methods": ["ga"], "ablations.retrain": False,
                                  "ablations.baseline_grid": {"ga": {"lr": [1e-3, 1.0],
                                                                       "steps": [3]}}})
    result = ablations._compare(exp)
    rows = {(r["aspect"], r["method"]): r for r in result["rows"]}
    for aspect in exp.data.trust:
        assert result["matched"][aspect] == {"ga": {"lr": 1e-3, "steps": 3}}
        assert rows[aspect, "ga"]["eval"] == f"evals/test/ga_{aspect}_lr0.001_steps3.json"
        assert rows[aspect, "ga"]["setting"] == "lr 0.001, steps 3"
        assert rows[aspect, "ours"]["setting"] == "β 0.01"
    assert {p["method"] for p in result["tradeoff"]} == {"ours", "ga"}


def test_every_registered_baseline_has_a_trainer() -> None:
    from trustrepair.ablations import TRAINERS, trains
    from trustrepair.baseline_registry import BASELINES

    assert set(TRAINERS) == set(BASELINES)
    with pytest.raises(ValueError, match="'rlhf' is not in trustrepair.baseline_registry"):
        trains("rlhf")


def test_a_new_baseline_is_one_entry_and_its_trainer(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    from types import SimpleNamespace

    from trustrepair.ablations import TRAINERS
    from trustrepair.baseline_registry import BASELINES, Baseline

    monkeypatch.setitem(BASELINES, "noop", Baseline("the post-SFT model itself",
                                                    trains_through_prefix=True,
                                                    nested_steps=False))
    calls = []
    monkeypatch.setitem(TRAINERS, "noop", lambda abl, aspect, **budget: calls.append(
        (aspect, budget)) or abl.model)
    params = smoke_params(tmp_path, **{"ablations.methods": ["sga", "noop"]})
    assert params.ablations.methods == ("sga", "noop")
    abl = SimpleNamespace(p=params, prefix="the cache", model=nn.Sequential(nn.Linear(2, 2)),
                          preconditioner=SimpleNamespace(modules=["0"]), _runs={})
    abl._train = partial(Ablations._train, abl)
    abl._tracked_weights = partial(Ablations._tracked_weights, abl)
    model = Ablations.baseline(abl, "noop", "truthfulness", lr=0.1, steps=2)
    assert torch.equal(model[0].weight, abl.model[0].weight) and model is not abl.model
    assert calls == [("truthfulness", {"lr": 0.1, "steps": 2, "max_length": 64, "seed": 0,
                                       "cache": "the cache"})]


def test_a_kept_variant_rebuilds_the_evaluated_model(run_dir: Path) -> None:
    """Step 05 saves what it changed (the tracked blocks) of each model it reports, so step
    08 scores that very model."""
    import copy

    from trustrepair.heldout import with_tracked_weights

    exp = _experiment(run_dir, **{"ablations.eval_triples": 4, "ablations.ppl_dialogues": 4})
    abl = Ablations(exp)
    aspect = list(exp.data.trust)[0]
    result = abl.evaluated("kept", [aspect], partial(abl.pbrf, aspect, "topk", 0.05), keep=True)
    assert result["variant"] == "variants/kept.safetensors"
    rebuilt = with_tracked_weights(copy.deepcopy(abl.model), abl.dir / result["variant"])
    repaired = abl.pbrf(aspect, "topk", 0.05)
    assert all(torch.equal(p, q) for p, q in zip(rebuilt.state_dict().values(),
                                                 repaired.state_dict().values(), strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(rebuilt.state_dict().values(),
                                                     abl.model.state_dict().values(),
                                                     strict=True)), "the repair changed it"
    assert "variant" not in abl.evaluated("not_kept", [aspect], lambda: abl.model)
