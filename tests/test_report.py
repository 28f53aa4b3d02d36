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
