"""Steps 05 and 06 refuse to start without what they build on."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustrepair.ablations import run_ablations
from trustrepair.experiment import Experiment
from trustrepair.timing import run_timing

from .conftest import smoke_params


def test_ablations_need_the_factors_of_step_02(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="attribution.json"):
        run_ablations(Experiment(smoke_params(tmp_path)))


def test_timing_needs_the_retraining_of_step_05(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="ablations.retrain: true"):
        run_timing(Experiment(smoke_params(tmp_path)))
