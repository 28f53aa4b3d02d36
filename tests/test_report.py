"""Table writers and the paper's relative-change convention."""

from __future__ import annotations

import pandas as pd
import pytest

from trustrepair.report import relative_change, repair_table, write_table


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
    def result(values: dict, ppl: float) -> dict:
        return {"aspects": {a: {"logodds": v} for a, v in values.items()}, "ppl": ppl}

    pre = result({"truthfulness": 0.4, "machine_ethics": -0.1}, 10.0)
    post = result({"truthfulness": 0.5, "machine_ethics": -0.2}, 8.0)
    repaired = {"truthfulness": result({"truthfulness": 0.45}, 8.1),
                "machine_ethics": result({"machine_ethics": -0.3}, 8.2)}
    table = repair_table(pre, post, repaired)
    assert list(table.aspect) == ["truthfulness", "machine_ethics"]
    assert table.ours_ppl.tolist() == [8.1, 8.2]
    assert table.rel_change_logodds.tolist() == pytest.approx([10.0, 50.0])


def test_paper_vs_ours_sets_our_numbers_beside_the_papers() -> None:
    from trustrepair.report import ASPECT_LABELS, paper_vs_ours

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
    for piece in (*ASPECT_LABELS.values(), "tiny-llama", "Ours: 10M parameters",
                  "| 0.512 | 0.476 |", "+1.2 .. +9.6",  # paper, Pythia-1.4B truthfulness
                  "| 0.432 | 0.412 | +4.58 | -1.33 |",  # ours, truthfulness
                  "## Table 2", "+3.52", "-0.75", "+1.23", "-0.57",
                  "## Table 4", "| random |", "-9.88", "-12.35"):
        assert piece in full, piece
    short = paper_vs_ours(table1, None, None, model_label="tiny-llama", scale_note="")
    assert "## Table 1" in short
    assert "## Table 2" not in short and "## Table 4" not in short and "+3.52" not in short
    assert short.strip().splitlines()[-1].startswith("| Stereotypical bias |")


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
