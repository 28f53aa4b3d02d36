"""Typed step results: what a later step reads back is what the earlier one saved."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustrepair.artifacts import write_json
from trustrepair.params import load_params
from trustrepair.results import Subsets, factors_dir, reported_beta
from trustrepair.steps import ATTRIBUTION, REPAIR, SELECTION


def test_subsets_come_back_per_target_and_selector(tmp_path: Path) -> None:
    saved = {"k": 2, "eta": 100.0, "fingerprint": "x", "subsets": {
        "truthfulness": {"dpp": {"indices": [4, 1], "ids": ["d4", "d1"]},
                         "topk": {"indices": [1, 4], "ids": ["d1", "d4"]}},
        "common": {"dpp": {"indices": [0, 3], "ids": ["d0", "d3"]},
                   "topk": {"indices": [3, 0], "ids": ["d3", "d0"]}}}}
    write_json(SELECTION.output(tmp_path, "subsets"), saved)
    subsets = Subsets.load(tmp_path)
    assert (subsets.k, subsets.eta) == (2, 100.0)
    assert subsets.of("dpp") == {"truthfulness": [4, 1], "common": [0, 3]}, "selection order kept"
    assert subsets.ids["common"]["topk"] == ["d3", "d0"]


def test_a_missing_result_names_the_step_to_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="03_dpp"):
        Subsets.load(tmp_path)


def test_the_reported_beta_is_the_fixed_one_or_step_04s_choice(tmp_path: Path) -> None:
    fixed = load_params("params/smoke.yaml", repair__beta=0.5, paths__runs=str(tmp_path))
    assert reported_beta(fixed) == 0.5, "a fixed β needs no step 04 result"
    chosen = load_params("params/smoke.yaml", repair__beta=None, paths__runs=str(tmp_path))
    write_json(REPAIR.output(chosen.run_dir(), "result"), {"beta": 3e-4})
    assert reported_beta(chosen) == 3e-4


def test_the_factors_are_found_where_step_02_says(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="02_attribution"):
        factors_dir(tmp_path)
    write_json(ATTRIBUTION.output(tmp_path, "summary"), {"factors_dir": str(tmp_path / "f")})
    assert factors_dir(tmp_path) == tmp_path / "f"
