"""The notebook chain end to end on the smoke params, and the runner's caching rules."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from trustrepair import cli
from trustrepair.artifacts import atomic_path, write_json
from trustrepair.experiment import Experiment
from trustrepair.heldout_registry import HELDOUT_BENCHMARKS
from trustrepair.params import ASPECTS, load_params
from trustrepair.steps import SFT, STEPS, TIMINGS

from .conftest import ROOT, smoke_params

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _params_file(tmp_path: Path, base: str = "smoke.yaml", **sections) -> Path:
    raw = {"extends": str(ROOT / "params" / base),
           "paths": {"runs": str(tmp_path / "runs"), "tables": str(tmp_path / "tables"),
                     "figures": str(tmp_path / "figures"), "reports": str(tmp_path / "reports"),
                     "cache": str(tmp_path / "cache")},
           **sections}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_committed_clean(notebook: Path) -> None:
    nb = json.loads(notebook.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert nb["cells"][0]["cell_type"] == "markdown", "open with what the notebook does"
    tagged = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1 and code[0] is tagged[0], "papermill parameters come first"
    declared = "".join(tagged[0]["source"])
    assert "params_file" in declared and "recompute" in declared, "what the runner passes"


MODEL_STEPS = ("01_sft", "02_attribution", "03_dpp", "04_repair", "05_ablations")
"""The steps a model family changes; 06 times the same code and 07 only reports."""


@pytest.mark.slow
def test_smoke_chain_end_to_end(tmp_path: Path, capsys) -> None:
    params_file = _params_file(tmp_path)
    assert cli.main(["run", str(params_file)]) == 0
    table = _check_model_steps(tmp_path, "smoke")
    name, run_dir = "smoke", tmp_path / "runs" / "smoke"
    tables, figures = tmp_path / "tables" / name, tmp_path / "figures" / name
    for step in ("06_timing", "07_paper"):
        assert (run_dir / "notebooks" / f"{step}.ipynb").exists()
    timing = pd.read_csv(tables / "timing.csv")
    assert list(timing.columns) == ["what", "subset_size", "seconds"]
    repairs = timing[timing.what == "repair"]
    n_train = json.loads((run_dir / "02_attribution" / "attribution.json").read_text())["n_train"]
    assert list(repairs.subset_size) == [5, 10, n_train], "1000 is capped at the train set"
    assert {"retrain_without_S", "factor_fit"} <= set(timing.what)
    assert (timing.seconds > 0).all()
    for stem in ("figure2", "figure3"):
        assert (figures / f"{stem}.pdf").stat().st_size > 0
    from trustrepair.report import figure2_grid

    bands = figure2_grid(load_params(params_file))
    for kind in ("logodds", "ppl"):
        assert (bands[f"{kind}_ci_low"] <= bands[f"{kind}_ci_high"]).all(), "Figure 2's bands"
    comparison = (tables / "paper_vs_ours.md").read_text()
    ours = pd.read_csv(tables / "table1.csv").ours_logodds[0]
    assert "Pythia-1.4B" in comparison and f"{ours:.3f}" in comparison
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert all(manifest["steps"][s]["status"] == "done"
               for s in (*MODEL_STEPS, "06_timing", "07_paper", "08_heldout"))
    heldout = pd.read_csv(tables / "heldout.csv")
    assert list(dict.fromkeys(heldout.benchmark)) == ["bbq", "moralchoice", "truthfulqa_mc"]
    methods = load_params(params_file).ablations.methods
    per_aspect = {f"{m}_{a}": a for m in ("topk", "hidden_cosine", "gradient_dot", *methods)
                  for a in ASPECTS}
    assert set(heldout.model) == {"pre_sft", "post_sft", "random_seed0", "random_seed1",
                                  "random_seed2", *(f"ours_{t}" for t in (*ASPECTS, "common")),
                                  *per_aspect}, "step 05's models are scored too"
    for model, aspect in per_aspect.items():
        assert set(heldout[heldout.model == model].benchmark) == {
            b for b, entry in HELDOUT_BENCHMARKS.items() if entry.aspect == aspect}
    changed = heldout[heldout.model != "post_sft"]
    assert (changed.delta_ci_low <= changed.delta_ci_high).all() and changed.delta.notna().all()
    transfer = pd.read_csv(tables / "heldout_transfer.csv")
    assert set(transfer.model) == set(heldout.model) - {"pre_sft", "post_sft"}
    assert set(transfer.transfers) <= {"yes", "worse", "within noise"}
    assert (transfer.groupby("benchmark").probe_rank.min() == 1).all()
    assert (figures / "heldout.png").stat().st_size > 0
    for step in STEPS:  # the registry names every file a step writes
        record = manifest["steps"].get(step.name)
        if record is not None:
            assert "undeclared" not in record["artifacts"], (step.name, record["artifacts"])
            assert sorted(f for files in record["artifacts"].values() for f in files) == \
                sorted(record["outputs"])
    assert {"scores", "features", "summary", "ranked", "kronfluence"} <= set(
        manifest["steps"]["02_attribution"]["artifacts"])
    assert manifest["environment"]["packages"]["torch"]
    sft_dir = run_dir / "01_sft"
    assert "train_runtime" not in json.loads((sft_dir / "sft_metrics.json").read_text())
    assert json.loads((sft_dir / TIMINGS).read_text())["train_runtime"] > 0, \
        "seconds are kept apart from the results later steps depend on"

    # Seed 0 is this run: every step is copied, 07's empty folder too.
    assert cli.main(["run", str(params_file), "--seeds", "0"]) == 0
    seeded = tables / "seeds" / "seed-0"
    for stem in ("table1", "table2", "table4", "ablations"):
        assert (seeded / f"{stem}.csv").read_bytes() == (tables / f"{stem}.csv").read_bytes(), \
            f"a copied step's {stem} is rebuilt for the seed"
        summary = (tables / "seeds" / f"{stem}.md").read_text()
        assert "±" not in summary and "nan" not in summary, "one seed: a mean, no spread"
    (tables / "seeds" / "table4.csv").unlink()
    (seeded / "table1.csv").unlink()
    assert cli.main(["figures", str(params_file), "--seeds", "0"]) == 0, "rebuilt, not rerun"
    assert (seeded / "table1.csv").read_bytes() == (tables / "table1.csv").read_bytes()
    assert (tables / "seeds" / "table4.csv").exists()

    # Unchanged inputs: nothing reruns. Then the figures rebuild from saved results alone.
    stamp = (run_dir / "01_sft" / "eval_post.json").stat().st_mtime_ns
    capsys.readouterr()
    assert cli.main(["run", str(params_file)]) == 0
    assert "up to date, skipped" in capsys.readouterr().out
    assert (run_dir / "01_sft" / "eval_post.json").stat().st_mtime_ns == stamp
    # --force recomputes the step's saved results, not only its notebook.
    saved = run_dir / "03_dpp" / "subsets.json"
    before = (saved.stat().st_mtime_ns, json.loads(saved.read_text())["subsets"])
    assert cli.main(["run", str(params_file), "--only", "03", "--force"]) == 0
    assert saved.stat().st_mtime_ns != before[0], "recomputed and written again"
    assert json.loads(saved.read_text())["subsets"] == before[1], "deterministic picks"
    (tables / "table1_pre_post.csv").unlink()
    assert cli.main(["figures", str(params_file)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tables / "table1_pre_post.csv"), table)


def _check_model_steps(tmp_path: Path, name: str) -> pd.DataFrame:
    """What steps 01-05 must have written for the run ``name``; returns its Table 1 pre/post."""
    run_dir = tmp_path / "runs" / name
    tables, figures = tmp_path / "tables" / name, tmp_path / "figures" / name
    table = pd.read_csv(tables / "table1_pre_post.csv")
    assert list(table.columns) == ["aspect", "pre_sft_logodds", "post_sft_logodds",
                                   "pre_sft_ppl", "post_sft_ppl"]
    assert list(table.aspect) == list(ASPECTS)
    assert (table.post_sft_ppl < table.pre_sft_ppl).all(), "SFT must lower HH test perplexity"
    for ext in ("md", "tex"):
        assert (tables / f"table1_pre_post.{ext}").stat().st_size > 0
    for ext in ("pdf", "png"):
        assert (figures / f"logodds_pre_post.{ext}").stat().st_size > 0
    for step in MODEL_STEPS:
        assert (run_dir / "notebooks" / f"{step}.ipynb").exists()
    assert not (run_dir / "notebooks" / "02b_planted.ipynb").exists(), "planting is off"
    overlap = pd.read_csv(tables / "topk_overlap.csv")
    assert list(overlap.target) == [*ASPECTS, "common"]
    subsets = json.loads((run_dir / "03_dpp" / "subsets.json").read_text())["subsets"]
    assert set(subsets) == {*ASPECTS, "common"}
    for picks in subsets.values():
        assert {len(p["indices"]) for p in picks.values()} == {10}
        assert all(len(set(p["indices"])) == 10 for p in picks.values())
    for target in subsets:
        assert (figures / f"selection_pca_{target}.png").exists()
    table1 = pd.read_csv(tables / "table1.csv")
    changes = ["delta_logodds", "delta_logodds_ci_low", "delta_logodds_ci_high",
               "rel_change_logodds", "rel_change_logodds_ci_low", "rel_change_logodds_ci_high",
               "rel_change_ppl", "rel_change_ppl_ci_low", "rel_change_ppl_ci_high"]
    assert list(table1.columns) == [
        "aspect", "pre_sft_logodds", "post_sft_logodds", "ours_logodds", "pre_sft_ppl",
        "post_sft_ppl", "ours_ppl", *changes]
    assert list(table1.aspect) == list(ASPECTS)
    expected = 100 * (table1.post_sft_logodds - table1.ours_logodds) / table1.post_sft_logodds.abs()
    assert (table1.rel_change_logodds - expected).abs().max() < 1e-9
    delta = table1.ours_logodds - table1.post_sft_logodds
    assert (table1.delta_logodds - delta).abs().max() < 1e-12
    table2 = pd.read_csv(tables / "table2.csv")
    assert list(table2.columns) == list(table1.columns)
    assert table2.ours_ppl.nunique() == 1, "one common repaired model for every aspect"
    assert table2.rel_change_ppl_ci_low.nunique() == table2.rel_change_ppl_ci_high.nunique() == 1
    interval = r"[+-]\d+\.\d+ \[[+-]\d+\.\d+, [+-]\d+\.\d+\]"
    for stem in ("table1", "table2", "table4", "ablations"):
        shown = (tables / f"{stem}.md").read_text().splitlines()
        assert "_ci_" not in shown[0], "an interval shares its value's cell"
        assert all(len(re.findall(interval, row)) == 3 for row in shown[2:]), stem
        assert "nan" not in "".join(shown), "a value that does not apply shows empty"
    assert (run_dir / "04_repair" / "model_common" / "config.json").exists()
    assert (figures / "predicted_vs_actual.png").exists()
    chosen = json.loads((run_dir / "04_repair" / "repair.json").read_text())["beta"]
    curve = pd.read_csv(tables / "beta_selection.csv")
    assert set(curve.target) == {*ASPECTS, "common"}
    assert set(curve[curve.chosen].beta) == {chosen}, "Tables 1 and 2 at the chosen β"
    assert json.loads((run_dir / "05_ablations" / "ablations.json").read_text())["beta"] == chosen
    assert (run_dir / "01_sft" / "model" / "config.json").exists()
    table4 = pd.read_csv(tables / "table4.csv")
    assert list(table4.columns) == [
        "aspect", "method", "setting", *changes[:3], "delta_logodds_std", *changes[3:6],
        "rel_change_logodds_std", *changes[6:], "rel_change_ppl_std"]
    ablation = pd.read_csv(tables / "ablations.csv")
    settings = ablation.groupby("method").setting.unique()
    assert list(settings["ours"]) == [f"β {chosen:g}"]
    assert list(settings["sga"]) == ["lr 0.001, steps 2"], "no grid: ablations.lr and .steps"
    for frame in (table1, table2, table4, ablation):
        for change in ("delta_logodds", "rel_change_logodds", "rel_change_ppl"):
            low, high = frame[f"{change}_ci_low"], frame[f"{change}_ci_high"]
            assert (low.notna() & (low <= high)).all()
    assert sorted(table4.method.unique()) == ["ours", "random"]
    assert list(ablation.columns) == list(table4.columns)
    draws = ["random_seed0", "random_seed1", "random_seed2"]
    assert set(ablation.method) == {"ours", "topk", "random", *draws, "hidden_cosine",
                                    "gradient_dot", "sga", "ga", "ga_kl", "dpo", "retrain",
                                    "retrain_random"}
    assert (ablation.groupby("method").aspect.nunique() == len(ASPECTS)).all()
    pd.testing.assert_frame_equal(table4, ablation[ablation.method.isin(["ours", "random"])]
                                  .reset_index(drop=True))
    for aspect, rows in ablation.groupby("aspect"):
        drawn, random = rows[rows.method.isin(draws)], rows[rows.method == "random"].iloc[0]
        assert drawn.rel_change_logodds.nunique() == 3, f"{aspect}: three different draws"
        for change in ("delta_logodds", "rel_change_logodds", "rel_change_ppl"):
            column = drawn[change]
            assert random[change] == pytest.approx(column.mean())
            assert random[f"{change}_std"] == pytest.approx(column.std())
        assert rows[rows.method != "random"].rel_change_logodds_std.isna().all()
    saved = json.loads((run_dir / "05_ablations" / "ablations.json").read_text())
    assert set(saved["subsets"]["common"]) == set(draws), "a draw repairs every aspect"
    for target, named in saved["subsets"].items():
        assert target == "common" or set(named) == {"hidden_cosine", "gradient_dot"}
        assert all(len(set(picked)) == 10 for picked in named.values()), "k samples each"
    for method in ("retrain", "retrain_random"):
        retrained = ablation[ablation.method == method]
        assert retrained.rel_change_ppl.nunique() == 1, "one model retrained for every aspect"
        assert retrained.rel_change_ppl_ci_low.nunique() == 1, "its interval is one too"
    left_out = {m: set(r["excluded_ids"]) for m, r in saved["retrained"].items()}
    assert left_out["retrain"] == set(subsets["common"]["dpp"]["ids"])
    assert len(left_out["retrain_random"]) == 10 and left_out["retrain_random"] != left_out[
        "retrain"], "the control leaves out as many samples, at random"
    return table


@pytest.mark.slow
def test_a_gpt_neox_model_runs_the_model_steps(tmp_path: Path) -> None:
    params_file = _params_file(tmp_path, "smoke-neox.yaml")
    assert cli.main(["run", str(params_file), "--only", *MODEL_STEPS]) == 0
    _check_model_steps(tmp_path, "smoke-neox")


def test_a_changed_section_reruns_the_step(tmp_path: Path) -> None:
    from trustrepair.runner import step_key

    notebook = ROOT / "notebooks" / "01_sft.ipynb"
    a = step_key(smoke_params(tmp_path), notebook, "")
    assert a == step_key(smoke_params(tmp_path, description="other words"), notebook, "")
    assert a != step_key(smoke_params(tmp_path, **{"sft.epochs": 3}), notebook, "")
    assert a != step_key(smoke_params(tmp_path), notebook, "upstream changed")


def test_cached_results_are_reused_only_under_the_same_settings(tmp_path: Path) -> None:
    calls = []
    exp = Experiment(smoke_params(tmp_path))
    path = tmp_path / "result.json"
    assert exp.cached(SFT, path, lambda: calls.append(1) or {"x": 1})["x"] == 1
    assert exp.cached(SFT, path, lambda: calls.append(1) or {"x": 2})["x"] == 1
    later_step_only = Experiment(smoke_params(tmp_path, **{"selection.k": 3}))
    assert later_step_only.cached(SFT, path, lambda: calls.append(1) or {"x": 9})["x"] == 1
    other = Experiment(smoke_params(tmp_path, **{"eval.batch_size": 3}))
    assert other.cached(SFT, path, lambda: calls.append(1) or {"x": 3})["x"] == 3
    assert len(calls) == 2


def test_a_saved_result_without_a_field_added_since_is_recomputed(tmp_path: Path) -> None:
    from trustrepair.evaluation import has_units

    exp = Experiment(smoke_params(tmp_path))
    path = tmp_path / "eval.json"
    old = {"aspects": {"truthfulness": {"per_triple": [0.1]}}}
    exp.cached(SFT, path, lambda: old)
    new = {"aspects": {"truthfulness": {"per_triple": [0.1], "groups": ["q"]}}}
    assert exp.cached(SFT, path, lambda: new)["aspects"] == old["aspects"], "same settings"
    assert exp.cached(SFT, path, lambda: new, reusable=has_units)["aspects"] == new["aspects"]


def test_an_interrupted_write_leaves_the_old_artifact(tmp_path: Path) -> None:
    path = write_json(tmp_path / "a.json", {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text('{"v": 2, "trunc')
        raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_validate_reports_bad_params_before_compute(tmp_path: Path, capsys) -> None:
    bad = _params_file(tmp_path, sft={"learning_rate": 0})
    assert cli.main(["validate", str(bad)]) == 2
    assert "sft.learning_rate" in capsys.readouterr().err


def test_a_sample_cap_larger_than_the_data_fails_before_compute(tmp_path: Path, capsys) -> None:
    too_many = _params_file(tmp_path, data={"hh": {"max_train": 100_000}})
    assert cli.main(["run", str(too_many)]) == 2
    assert "data.hh.max_train=100000" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "smoke" / "manifest.json").exists()


def test_a_missing_data_folder_names_the_variable(tmp_path: Path, capsys) -> None:
    missing = _params_file(tmp_path, data={"fixtures": False,
                                           "hh": {"source": str(tmp_path / "nowhere")}})
    assert cli.main(["validate", str(missing), "--data"]) == 2
    assert "TRUST_DATA_DIR" in capsys.readouterr().err


@pytest.mark.slow
def test_planted_harm_step_runs_and_writes_the_recovery_table(tmp_path: Path) -> None:
    params_file = _params_file(tmp_path, "smoke-planted.yaml")
    assert cli.main(["run", str(params_file), "--only", "01", "02", "02b"]) == 0
    table = pd.read_csv(tmp_path / "tables" / "smoke-planted" / "planted_recovery.csv")
    assert list(table.columns) == ["method", "aspect", "auroc", "auroc_ci_low", "auroc_ci_high",
                                   "precision_at_k"]
    assert (table.auroc_ci_low <= table.auroc).all() and (table.auroc <= table.auroc_ci_high).all()
    assert set(table.method) == {"ekfac", "gradient_dot", "hidden_cosine", "random"}
    assert set(table.aspect) == set(ASPECTS)
    assert table.auroc.between(0, 1).all() and table.precision_at_k.between(0, 1).all()
    harm = pd.read_csv(tmp_path / "tables" / "smoke-planted" / "planted_harm.csv")
    assert list(harm.columns) == ["aspect", "planted", "control", "excess_logodds",
                                  "excess_logodds_ci_low", "excess_logodds_ci_high", "harmful"]
    assert set(harm.aspect) == set(ASPECTS) and harm.harmful.dtype == bool
    assert (harm.harmful == (harm.excess_logodds_ci_low > 0)).all()
    assert (tmp_path / "figures" / "smoke-planted" / "planted_roc.pdf").exists()


def test_runner_finds_every_numbered_notebook_in_order() -> None:
    from trustrepair.runner import notebooks

    found = [nb.stem for nb in notebooks(ROOT / "notebooks")]
    assert found == sorted(nb.stem for nb in NOTEBOOKS)
    assert found.index("02_attribution") < found.index("02b_planted") < found.index("03_dpp")


def test_only_picks_steps_by_number_or_name() -> None:
    from trustrepair.runner import _select, notebooks

    found = notebooks(ROOT / "notebooks")
    assert [nb.stem for nb in _select(found, ["02"])] == ["02_attribution"]
    assert [nb.stem for nb in _select(found, ["02b", "03_dpp"])] == ["02b_planted", "03_dpp"]
    with pytest.raises(ValueError, match=r"\['9'\] matches none"):
        _select(found, ["01", "9"])


def test_only_refuses_a_step_whose_upstream_is_stale(tmp_path: Path, capsys) -> None:
    params_file = _params_file(tmp_path)
    assert cli.main(["run", str(params_file), "--only", "03"]) == 2
    assert "step 03_dpp needs 01_sft, which is not up to date" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "smoke" / "03_dpp").exists()


def test_a_failing_step_names_its_executed_notebook(tmp_path: Path, capsys) -> None:
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    nb = json.loads((ROOT / "notebooks" / "03_dpp.ipynb").read_text())
    nb["cells"].insert(2, {"cell_type": "code", "execution_count": None, "id": "boom",
                           "metadata": {}, "outputs": [], "source": "raise KeyError('boom')"})
    (notebooks / "01_broken.ipynb").write_text(json.dumps(nb))
    params_file = _params_file(tmp_path)
    assert cli.main(["run", str(params_file), "--notebooks", str(notebooks)]) == 2
    err = capsys.readouterr().err
    assert "step 01_broken failed (KeyError" in err and "01_broken.ipynb" in err
    manifest = json.loads((tmp_path / "runs" / "smoke" / "manifest.json").read_text())
    assert manifest["steps"]["01_broken"]["status"] == "failed"
