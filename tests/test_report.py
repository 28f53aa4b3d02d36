"""Table writers and the paper's relative-change convention."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trustrepair.report import relative_change, repair_table, write_table
from trustrepair.uncertainty import Bootstrap, logodds_change, perplexity_change

BOOTSTRAP = Bootstrap(resamples=2000, confidence=0.95, seed=0)
TOKENS = [12, 30, 7, 21]


def _evaluation(per_triple: dict[str, list[float]], nll_per_token: list[float]) -> dict:
    """An evaluation as :func:`trustrepair.evaluation.evaluate` saves it."""
    return {"aspects": {a: {"logodds": float(np.mean(v)), "per_triple": v,
                            "ids": [f"{a}-{i}" for i in range(len(v))],
                            "groups": [f"{a}-{i}" for i in range(len(v))]}
                        for a, v in per_triple.items()},
            "ppl": float(np.exp(np.dot(nll_per_token, TOKENS) / sum(TOKENS))),
            "ppl_ids": [f"hh-{i}" for i in range(len(TOKENS))],
            "ppl_nll": [x * n for x, n in zip(nll_per_token, TOKENS, strict=True)],
            "ppl_tokens": TOKENS}


def test_write_table_emits_csv_markdown_and_booktabs(tmp_path) -> None:
    frame = pd.DataFrame({"aspect": ["machine_ethics"], "value": [0.123456]})
    csv, md, tex = write_table(frame, tmp_path, "t", caption="50% of x_y")
    assert pd.read_csv(csv).equals(frame), "CSV keeps full precision"
    assert md.read_text().splitlines() == ["| aspect | value |", "|---|---|",
                                           "| machine_ethics | 0.123 |"]
    text = tex.read_text()
    for piece in (r"\toprule", r"\midrule", r"\bottomrule", r"machine\_ethics & 0.123 \\",
                  r"\caption{50\% of x\_y}"):
        assert piece in text


def test_relative_change_follows_the_paper() -> None:
    # Table 1, Pythia-1.4B truthfulness: Post 0.512, Ours 0.476 -> +7.0; PPL 6.016 -> 6.059: -0.7
    assert relative_change(0.512, 0.476) == pytest.approx(7.03, abs=0.01)
    assert relative_change(6.016, 6.059) == pytest.approx(-0.71, abs=0.01)
    # negative log-odds: bias -0.484 -> -0.549 is an improvement of +13.4
    assert relative_change(-0.484, -0.549) == pytest.approx(13.4, abs=0.05)


def test_repair_table_takes_each_aspect_from_its_own_repair() -> None:
    pre = _evaluation({"truthfulness": [0.3, 0.5], "machine_ethics": [-0.1, -0.1]}, [2.4] * 4)
    post = _evaluation({"truthfulness": [0.4, 0.6, 0.5], "machine_ethics": [-0.3, -0.1]},
                       [2.0, 2.2, 2.1, 2.3])
    repaired = {"truthfulness": _evaluation({"truthfulness": [0.35, 0.55, 0.45]},
                                            [2.1, 2.2, 2.1, 2.3]),
                "machine_ethics": _evaluation({"machine_ethics": [-0.4, -0.2]},
                                              [2.0, 2.3, 2.2, 2.3])}
    table = repair_table(pre, post, repaired, BOOTSTRAP)
    assert list(table.columns) == [
        "aspect", "pre_sft_logodds", "post_sft_logodds", "ours_logodds", "pre_sft_ppl",
        "post_sft_ppl", "ours_ppl", "delta_logodds", "delta_logodds_ci_low",
        "delta_logodds_ci_high", "rel_change_logodds", "rel_change_logodds_ci_low",
        "rel_change_logodds_ci_high", "rel_change_ppl", "rel_change_ppl_ci_low",
        "rel_change_ppl_ci_high"]
    assert list(table.aspect) == ["truthfulness", "machine_ethics"]
    assert table.ours_ppl.tolist() == [repaired["truthfulness"]["ppl"],
                                       repaired["machine_ethics"]["ppl"]]
    assert table.rel_change_logodds.tolist() == pytest.approx([10.0, 50.0])
    assert table.delta_logodds.tolist() == pytest.approx([-0.05, -0.1]), "F_ours - F_post"
    # Each row's intervals are the bootstrap's on that row's pair of evaluations.
    delta, logodds = logodds_change([0.4, 0.6, 0.5], [0.35, 0.55, 0.45], BOOTSTRAP)
    ppl = perplexity_change(post["ppl_nll"], TOKENS, repaired["truthfulness"]["ppl_nll"],
                            TOKENS, BOOTSTRAP)
    first = table.iloc[0]
    assert (first.rel_change_logodds_ci_low, first.rel_change_logodds_ci_high) == (
        logodds.low, logodds.high)
    assert (first.rel_change_ppl_ci_low, first.rel_change_ppl_ci_high) == (ppl.low, ppl.high)
    assert (first.delta_logodds_ci_low, first.delta_logodds_ci_high) == (delta.low, delta.high)
    assert first.delta_logodds_ci_low == pytest.approx(-0.05), "a constant shift: no spread"
    for name in ("delta_logodds", "rel_change_logodds", "rel_change_ppl"):
        assert (table[f"{name}_ci_low"] <= table[name] + 1e-12).all()
        assert (table[name] <= table[f"{name}_ci_high"] + 1e-12).all()


def test_repair_table_refuses_evaluations_of_other_items() -> None:
    post = _evaluation({"truthfulness": [0.4, 0.6]}, [2.0] * 4)
    ours = _evaluation({"truthfulness": [0.3, 0.5]}, [2.0] * 4)
    ours["aspects"]["truthfulness"]["ids"] = ["other-0", "other-1"]
    with pytest.raises(ValueError, match="cannot be paired"):
        repair_table(post, post, {"truthfulness": ours}, BOOTSTRAP)


def test_the_tables_resample_triples_by_their_units() -> None:
    """Two units of three identical triples: Table 1's interval is that of two items."""
    post = _evaluation({"truthfulness": [0.4, 0.4, 0.4, 0.6, 0.6, 0.6]}, [2.0] * 4)
    ours = _evaluation({"truthfulness": [0.3, 0.3, 0.3, 0.58, 0.58, 0.58]}, [2.0] * 4)
    post["aspects"]["truthfulness"]["groups"] = ["q0"] * 3 + ["q1"] * 3
    row = repair_table(post, post, {"truthfulness": ours}, BOOTSTRAP).iloc[0]
    delta, _ = logodds_change([0.4, 0.4, 0.4, 0.6, 0.6, 0.6], [0.3, 0.3, 0.3, 0.58, 0.58, 0.58],
                              BOOTSTRAP, clusters=["q0"] * 3 + ["q1"] * 3)
    assert (row.delta_logodds_ci_low, row.delta_logodds_ci_high) == (delta.low, delta.high)
    iid, _ = logodds_change([0.4, 0.4, 0.4, 0.6, 0.6, 0.6], [0.3, 0.3, 0.3, 0.58, 0.58, 0.58],
                            BOOTSTRAP)
    assert delta != iid


def test_a_result_saved_without_triple_units_names_the_file_and_the_fix(tmp_path) -> None:
    from trustrepair.evaluation import has_units
    from trustrepair.report import with_per_item_values

    old = _evaluation({"truthfulness": [0.4, 0.6]}, [2.0] * 4)
    del old["aspects"]["truthfulness"]["groups"]
    assert not has_units(old), "a run resumes it no more: the step recomputes it"
    with pytest.raises(ValueError, match=r"^\S*repair\.json lacks truthfulness groups, .*units"
                                         r".*`trustrepair run PARAMS --force`$"):
        with_per_item_values(old, tmp_path / "repair.json")


def test_a_result_saved_without_per_item_values_names_the_fix(tmp_path) -> None:
    from trustrepair.report import with_per_item_values

    old = _evaluation({"truthfulness": [0.4, 0.6]}, [2.0] * 4)
    del old["ppl_nll"], old["ppl_tokens"], old["ppl_ids"]
    with pytest.raises(ValueError, match=r"eval_post\.json lacks ppl_ids, ppl_nll, ppl_tokens.*"
                                         r"trustrepair run PARAMS --force"):
        with_per_item_values(old, tmp_path / "eval_post.json")


def test_ablation_tables_refuse_results_saved_before_intervals(tmp_path) -> None:
    from trustrepair.artifacts import write_json
    from trustrepair.report import build_ablation_outputs

    from .conftest import smoke_params

    params = smoke_params(tmp_path)
    write_json(params.run_dir() / "05_ablations" / "ablations.json",
               {"beta": 0.01, "post_sft": {"ppl": 8.0, "logodds": {"truthfulness": 0.5}},
                "rows": [], "grid": [], "n_triples": {}, "ppl_dialogues": 4})
    with pytest.raises(ValueError, match="does not name the evaluation behind each row"):
        build_ablation_outputs(params)


def test_an_interval_shows_in_the_cell_of_its_value(tmp_path) -> None:
    frame = pd.DataFrame({"aspect": ["truthfulness"], "ours_ppl": [12.6081],
                          "rel_change_logodds": [12.8031], "rel_change_logodds_ci_low": [4.104],
                          "rel_change_logodds_ci_high": [20.97], "rel_change_ppl": [-0.7673],
                          "rel_change_ppl_ci_low": [-1.0123], "rel_change_ppl_ci_high": [-0.5]})
    csv, md, tex = write_table(frame, tmp_path, "t")
    assert pd.read_csv(csv).equals(frame), "CSV keeps every column at full precision"
    assert md.read_text().splitlines() == [
        "| aspect | ours_ppl | rel_change_logodds | rel_change_ppl |", "|---|---|---|---|",
        "| truthfulness | 12.608 | +12.8 [+4.1, +21.0] | -0.77 [-1.01, -0.50] |"]
    assert r"truthfulness & 12.608 & +12.8 [+4.1, +21.0] & -0.77 [-1.01, -0.50] \\" in \
        tex.read_text()


def test_figure2_draws_a_band_per_line_when_the_grid_has_intervals() -> None:
    from trustrepair.report import plot_figure2

    grid = pd.DataFrame([{"aspect": "truthfulness", "selector": s, "beta": b, "logodds": 0.4,
                          "ppl": 8.1} for s in ("dpp", "topk") for b in (0.001, 0.01)])
    post = {"logodds": {"truthfulness": 0.5}, "ppl": 8.0}
    assert not plot_figure2(grid, post).axes[0].collections
    banded = grid.assign(logodds_ci_low=0.35, logodds_ci_high=0.45, ppl_ci_low=8.0,
                         ppl_ci_high=8.2)
    fig = plot_figure2(banded, post)
    assert [len(ax.collections) for ax in fig.axes] == [2, 2]
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["with DPP", "without DPP (top-k)", "Post-SFT", "paired bootstrap interval"]


def test_paper_vs_ours_sets_our_numbers_beside_the_papers() -> None:
    from trustrepair.aspects import ASPECT_TABLE
    from trustrepair.report import paper_vs_ours

    aspects = ["truthfulness", "machine_ethics", "stereotypical_bias"]
    table1 = pd.DataFrame({"aspect": aspects, "pre_sft_logodds": [0.3, -0.1, -0.2],
                           "post_sft_logodds": [0.4321, -0.2, -0.3],
                           "ours_logodds": [0.4123, -0.25, -0.35], "pre_sft_ppl": 20.0,
                           "post_sft_ppl": 15.0, "ours_ppl": [15.2, 15.1, 15.3],
                           "rel_change_logodds": [4.5821, 25.0, 16.67],
                           "rel_change_ppl": [-1.3333, -0.67, -2.0]})
    table2 = table1.assign(rel_change_logodds=[1.234, 2.0, 3.0], rel_change_ppl=-0.5678)
    table4 = pd.DataFrame({"aspect": ["truthfulness"] * 2, "method": ["random", "ours"],
                           "rel_change_logodds": [-9.876, 4.5821],
                           "rel_change_ppl": [-12.345, -1.3333]})
    full = paper_vs_ours(table1, table2, table4, model_label="tiny-llama",
                         scale_note="Ours: 10M parameters; the paper: 1.4B-7B.")
    labels = [entry.label for entry in ASPECT_TABLE.values()]
    for piece in (*labels, "tiny-llama", "Ours: 10M parameters",
                  "| 0.512 | 0.476 |", "+1.2 .. +9.6",  # paper, Pythia-1.4B truthfulness
                  "| 0.432 | 0.412 | +4.58 | -1.33 |",  # ours, truthfulness
                  "## Table 2", "+3.52", "-0.75", "+1.23", "-0.57",
                  "## Table 4", "| random |", "-9.88", "-12.35"):
        assert piece in full, piece
    short = paper_vs_ours(table1, None, None, model_label="tiny-llama", scale_note="")
    assert "## Table 1" in short
    assert "## Table 2" not in short and "## Table 4" not in short and "+3.52" not in short
    assert short.strip().splitlines()[-1].startswith("| Stereotypical bias |")
    extra = pd.concat([table1, table1.iloc[:1].assign(aspect="honesty")], ignore_index=True)
    unmeasured = paper_vs_ours(extra, extra, table4, model_label="tiny-llama", scale_note="")
    assert "The paper does not measure honesty." in unmeasured
    assert "| honesty |" not in unmeasured, "no paper numbers to set it beside"


def test_figures_rebuild_byte_for_byte(tmp_path) -> None:
    """make figures twice gives the same files: no dates in PDFs, no randomised PCA."""
    import torch

    from trustrepair.report import plot_selection_pca, save_figure

    features = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    scores = torch.randn(50, generator=torch.Generator().manual_seed(1))
    picks = {"dpp": [0, 3, 7], "topk": [0, 1, 2]}
    for run in ("a", "b"):
        save_figure(plot_selection_pca(features, scores, picks, "t"), tmp_path / run, "pca")
    for ext in ("pdf", "png"):
        assert (tmp_path / "a" / f"pca.{ext}").read_bytes() == (tmp_path / "b" /
                                                                 f"pca.{ext}").read_bytes()


def test_figure3_prints_retraining_over_each_repair() -> None:
    from trustrepair.report import plot_figure3

    rows = pd.DataFrame({"what": ["repair", "repair", "retrain_without_S", "factor_fit"],
                         "subset_size": [10, 100, 5, None], "seconds": [2.0, 50.0, 88.0, 7.0]})
    fig = plot_figure3(rows)
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["1.8×", "44×"]


def _recovery(auroc: float, with_intervals: bool = True) -> dict:
    rows = []
    for method in ("ekfac", "gradient_dot", "random"):
        for aspect in ("truthfulness", "machine_ethics"):
            row = {"method": method, "aspect": aspect, "auroc": auroc, "precision_at_k": 0.5}
            if with_intervals:
                row |= {"auroc_ci_low": auroc - 0.1, "auroc_ci_high": min(auroc + 0.1, 1.0)}
            rows.append(row)
    return {"k": 2, "table": rows, "roc": {}}


def test_the_attribution_grid_has_a_row_per_setting_and_method(tmp_path) -> None:
    from trustrepair.artifacts import write_json
    from trustrepair.report import attribution_grid_table

    from .conftest import smoke_params

    cells = [smoke_params(tmp_path, name="a"),
             smoke_params(tmp_path, name="b", **{"attribution.loss_reduction": "mean",
                                                 "attribution.damping": 1e-8})]
    for params, value in zip(cells, (0.9, 0.6), strict=True):
        write_json(params.run_dir() / "02b_planted" / "recovery.json", _recovery(value))
    table = attribution_grid_table(cells)
    assert table[["method", "loss", "damping"]].values.tolist() == [
        ["ekfac", "mean", "1e-08"], ["ekfac", "sum", "heuristic"],
        ["gradient_dot", "mean", "1e-08"], ["gradient_dot", "sum", "heuristic"]]
    assert table["truthfulness_auroc"].tolist() == [0.6, 0.9, 0.6, 0.9]
    assert table["machine_ethics_auroc_ci_high"].tolist() == pytest.approx([0.7, 1.0] * 2)

    write_json(cells[1].run_dir() / "02b_planted" / "recovery.json", _recovery(0.6, False))
    with pytest.raises(ValueError, match="no AUROC intervals.*--only 02b --force"):
        attribution_grid_table(cells)


def test_the_tradeoff_marks_the_reported_beta_and_each_matched_point(tmp_path) -> None:
    from trustrepair.report import plot_tradeoff, tradeoff_table

    points = [{"aspect": "truthfulness", "method": "ours", "beta": b, "rel_change_logodds": g,
               "rel_change_ppl": -c} for b, g, c in [(1e-4, 1.0, 0.1), (1e-3, 5.0, 0.8)]]
    points += [{"aspect": "truthfulness", "method": "ga", "lr": lr, "steps": 5,
                "rel_change_logodds": g, "rel_change_ppl": -c}
               for lr, g, c in [(1e-3, 0.1, 0.05), (1e-2, 0.6, 0.7), (1e-1, 2.0, 9.0)]]
    result = {"beta": 1e-3, "tradeoff": points,
              "matched": {"truthfulness": {"ga": {"lr": 1e-2, "steps": 5}}}}
    table = tradeoff_table(result)
    assert table.loc[table["matched"], ["method", "beta", "lr"]].fillna(0).values.tolist() == [
        ["ours", 1e-3, 0], ["ga", 0, 1e-2]]
    assert str(table["steps"].dtype) == "Int64"
    fig = plot_tradeoff(table)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()[:2]] == ["ours (PBRF, β grid)", "ga"]
    ringed = [c.get_offsets().tolist() for c in ax.collections]
    assert ringed == [[[5.0, 0.8]], [[0.6, 0.7]]], "x: gain, y: perplexity increase"


def test_seed_tables_give_mean_and_spread_over_seeds(tmp_path) -> None:
    from trustrepair.report import build_seed_tables, seed_summary
    from trustrepair.results import random_draw_name

    from .conftest import smoke_params

    params = smoke_params(tmp_path)
    runs = [params.seeded(s) for s in (0, 1, 2)]
    for run, shift in zip(runs, (0.0, 1.0, 2.0), strict=True):
        draw = random_draw_name(run.seed)  # one random draw, named by its own seed
        pd.DataFrame({"aspect": ["truthfulness"] * 3, "method": ["ours", "random", draw],
                      "delta_logodds": [-0.1 - shift, 0.0, 0.0],
                      "delta_logodds_ci_low": [-0.2 - shift, -0.1, -0.1],
                      "delta_logodds_ci_high": [shift - 0.5, 0.1, 0.1],
                      "rel_change_logodds": [10.0 + shift, shift, shift],
                      "rel_change_ppl": [-1.0, -0.5 * shift, -0.5 * shift]}).to_csv(
            _mkdir(run.tables_dir()) / "table4.csv", index=False)
    table = seed_summary(runs, "table4").set_index("method")
    assert list(table.index) == ["ours", "random"], "a draw's row does not compare across seeds"
    assert table.loc["ours", "rel_change_logodds_mean"] == pytest.approx(11.0)
    assert table.loc["ours", "rel_change_logodds_std"] == pytest.approx(1.0)
    assert table.loc["ours", "delta_logodds_mean"] == pytest.approx(-1.1)
    assert table.loc["random", "rel_change_ppl_mean"] == pytest.approx(-0.5)
    assert table.loc["ours", "rel_change_ppl_std"] == 0 and (table.seeds == 3).all()
    assert table.better_in.to_dict() == {"ours": 1, "random": 0}, "interval below 0 in seed 0"
    paths = build_seed_tables(params, runs)
    assert [p.name for p in paths] == ["table4.csv", "table4.md", "table4.tex"]
    shown = paths[1].read_text().splitlines()
    assert shown[0] == ("| aspect | method | delta_logodds | rel_change_logodds | "
                        "rel_change_ppl | better_in | seeds |")
    assert shown[2] == ("| truthfulness | ours | -1.1000 ± 1.0000 | +11.0 ± 1.0 | -1.00 ± 0.00 "
                        "| 1 | 3 |")
    assert paths[0].parent == params.tables_dir() / "seeds"
    assert runs[1].tables_dir() == params.tables_dir() / "seeds" / "seed-1"


def test_held_out_transfer_over_seeds_counts_the_seeds_it_holds_in(tmp_path) -> None:
    from trustrepair.report import build_seed_tables

    from .conftest import smoke_params

    params = smoke_params(tmp_path)
    assert params.heldout.enabled
    runs = [params.seeded(s) for s in (0, 1, 2)]
    for run, verdict, delta in zip(runs, ("yes", "within noise", "worse"), (0.03, 0.01, -0.02),
                                   strict=True):
        pd.DataFrame({"benchmark": ["bbq"], "aspect": ["stereotypical_bias"],
                      "model": ["ours_stereotypical_bias"], "delta_logodds": [-0.02],
                      "delta_logodds_ci_low": [-0.03], "delta_logodds_ci_high": [-0.01],
                      "metric": ["accuracy_ambig"], "post_value": [0.1], "delta": [delta],
                      "delta_ci_low": [delta - 0.01], "delta_ci_high": [delta + 0.01],
                      "transfers": [verdict], "probe_rank": [1], "heldout_rank": [1]}).to_csv(
            _mkdir(run.tables_dir()) / "heldout_transfer.csv", index=False)
    paths = build_seed_tables(params, runs)
    assert [p.name for p in paths] == [f"heldout_transfer.{e}" for e in ("csv", "md", "tex")]
    row = pd.read_csv(paths[0]).iloc[0]
    assert (row.transfers_in, row.worse_in, row.seeds) == (1, 1, 3)
    assert row.delta_mean == pytest.approx(0.02 / 3)
    assert row.delta_std == pytest.approx(np.std([0.03, 0.01, -0.02], ddof=1))
    assert "+0.007 ± 0.025" in paths[1].read_text()


def test_held_out_transfer_over_seeds_waits_for_every_seed(tmp_path, capsys) -> None:
    from trustrepair.report_heldout import build_seed_heldout

    from .conftest import smoke_params

    params = smoke_params(tmp_path)
    assert build_seed_heldout(params, [params.seeded(s) for s in (0, 1)]) == []
    assert "not every seed has it" in capsys.readouterr().out


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_an_auroc_shows_as_a_level_with_its_interval(tmp_path) -> None:
    from trustrepair.report import write_table

    frame = pd.DataFrame({"method": ["ekfac"], "truthfulness_auroc": [0.9876],
                          "truthfulness_auroc_ci_low": [0.95], "truthfulness_auroc_ci_high": [1.0]})
    markdown = write_table(frame, tmp_path, "t")[1].read_text()
    assert "| ekfac | 0.988 [0.950, 1.000] |" in markdown


def test_the_held_out_figure_gives_each_model_one_style_and_one_legend_entry() -> None:
    from trustrepair.report_heldout import plot_probe_vs_heldout

    models = [f"m{i}" for i in range(12)]
    rows = [{"benchmark": b, "aspect": a, "model": f"{m}_{a}", "delta_logodds": -0.01,
             "delta_logodds_ci_low": -0.02, "delta_logodds_ci_high": 0.0, "delta": 0.01,
             "delta_ci_low": 0.0, "delta_ci_high": 0.02}
            for b, a in (("bbq", "stereotypical_bias"), ("moralchoice", "machine_ethics"))
            for m in models]
    fig = plot_probe_vs_heldout(pd.DataFrame(rows))
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == models, "once, across both panels"
    styles = {c.get_label(): (c.lines[0].get_marker(), str(c.lines[0].get_color()))
              for ax in fig.axes for c in ax.containers}
    assert set(styles) == set(models) and len(set(styles.values())) == len(models), (
        "no two models share a marker and colour")
    assert all(ax.get_legend() is None for ax in fig.axes), "no legend over the data"
