"""The paper's transcribed numbers agree with themselves across columns and tables."""

from __future__ import annotations

import pytest

from trustrepair.params import ASPECTS
from trustrepair.reported import MODELS, TABLE1, TABLE2, TABLE4

ROUNDING = 0.0005
"""Half a unit of the paper's three printed decimals."""


def test_reported_tables_have_the_papers_shape() -> None:
    assert list(TABLE1.columns) == [
        "aspect", "model", "pre_sft_logodds", "pre_sft_ppl", "post_sft_logodds", "post_sft_ppl",
        "ours_logodds", "ours_ppl", "rel_change_logodds", "rel_change_ppl"]
    assert list(TABLE2.columns) == ["model", "aspect", "rel_change_logodds", "rel_change_ppl"]
    assert list(TABLE4.columns) == ["aspect", "model", "method", "rel_change_logodds",
                                    "rel_change_ppl"]
    assert (len(TABLE1), len(TABLE2), len(TABLE4)) == (18, 9, 36)
    for table in (TABLE1, TABLE2, TABLE4):
        assert set(table.aspect) == set(ASPECTS)
        assert not table.isna().any().any()
    assert set(TABLE1.model) == set(TABLE4.model) == set(MODELS)
    assert list(dict.fromkeys(TABLE2.model)) == list(MODELS[:3])
    assert set(TABLE4.method) == {"random", "ours"}
    assert TABLE1.loc[0].tolist() == ["truthfulness", "Pythia-1.4B", 0.429, 7.005, 0.512, 6.016,
                                      0.476, 6.059, 7.0, -0.7]


def test_pre_and_post_sft_perplexity_is_one_number_per_model() -> None:
    # Pre- and Post-SFT are one model each, whatever aspect the row is about.
    assert (TABLE1.groupby("model")[["pre_sft_ppl", "post_sft_ppl"]].nunique() == 1).all().all()
    assert (TABLE2.groupby("model").rel_change_ppl.nunique() == 1).all()


@pytest.mark.parametrize("kind", ["logodds", "ppl"])
def test_table1_relative_changes_follow_from_its_columns(kind: str) -> None:
    post, ours = TABLE1[f"post_sft_{kind}"], TABLE1[f"ours_{kind}"]
    computed = 100 * (post - ours) / post.abs()
    # printed to 0.1, from inputs each off by up to ROUNDING
    slack = 0.1 + 100 * ROUNDING * (1 / post.abs() + ours.abs() / post**2)
    off = TABLE1[(computed - TABLE1[f"rel_change_{kind}"]).abs() > slack]
    assert off.empty, off[["aspect", "model", f"rel_change_{kind}"]]


# Table 4 reprints Table 1's changes for "ours"; in two rows it prints a different value, the
# correct rounding of Table 1's own columns (computed 1.146 and -1.248), where Table 1 prints
# 1.2 and -1.3.
TABLE4_DIFFERS = {("truthfulness", "Qwen2.5-1.5B", "logodds"): (1.1, 1.2),
                  ("truthfulness", "Pythia-6.9B", "ppl"): (-1.2, -1.3)}


def test_table4_ours_reprints_table1() -> None:
    ours = TABLE4[TABLE4.method == "ours"].merge(TABLE1, on=["aspect", "model"],
                                                 suffixes=("_t4", "_t1"))
    assert len(ours) == len(TABLE1)
    for row in ours.itertuples(index=False):
        for kind in ("logodds", "ppl"):
            t4, t1 = getattr(row, f"rel_change_{kind}_t4"), getattr(row, f"rel_change_{kind}_t1")
            key = (row.aspect, row.model, kind)
            assert abs(t4 - t1) <= 0.15, key
            assert (t4, t1) == TABLE4_DIFFERS.get(key, (t1, t1)), key
