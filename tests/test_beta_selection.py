"""β is chosen on validation data by the rule in params, and no choice reads test data."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustrepair.artifacts import read_json
from trustrepair.attribution import run_attribution
from trustrepair.experiment import Experiment
from trustrepair.repair import choose_beta, run_repair
from trustrepair.report import beta_choice, beta_selection_table
from trustrepair.selection import run_selection
from trustrepair.sft import run_sft

from .conftest import smoke_params

INCREASE = {  # β -> target -> validation perplexity increase over Post-SFT, %
    1e-4: {"truthfulness": 0.1, "machine_ethics": -0.2, "common": 0.2},
    3e-4: {"truthfulness": 0.5, "machine_ethics": 0.3, "common": 0.9},
    1e-3: {"truthfulness": 0.8, "machine_ethics": 0.6, "common": 1.4},
    3e-3: {"truthfulness": 4.0, "machine_ethics": 2.5, "common": 6.0},
}


def _curve() -> list[dict]:
    return [{"beta": beta, "target": target, "aspect": target, "logodds": -0.1 - beta,
             "ppl": 10 * (1 + increase / 100), "ppl_increase": increase}
            for beta, targets in INCREASE.items() for target, increase in targets.items()]


def test_the_rule_takes_the_largest_beta_within_the_limit_for_every_target() -> None:
    # 1e-3 keeps both aspects within 1 % but not the common subset.
    assert choose_beta(_curve(), 1.0) == {"beta": 3e-4, "within_limit": True}
    assert choose_beta(_curve(), 1.4) == {"beta": 1e-3, "within_limit": True}
    assert choose_beta(_curve(), 0.0) == {"beta": 1e-4, "within_limit": False}, \
        "none within the limit: the smallest, flagged"
    assert choose_beta(_curve(), 100.0) == {"beta": 3e-3, "within_limit": True}


def test_the_choice_and_its_curve_are_reported() -> None:
    selection = {**choose_beta(_curve(), 0.0), "beta_grid": list(INCREASE),
                 "max_ppl_increase": 0.0, "curve": _curve(),
                 "post_sft": {"ppl": 10.0, "logodds": {"truthfulness": -0.1,
                                                       "machine_ethics": -0.1,
                                                       "common": -0.1}}}
    sentence = beta_choice({"beta": selection["beta"], "beta_selection": selection})
    assert sentence.startswith("β = 0.0001, the smallest") and "no β keeps" in sentence
    table = beta_selection_table(selection)
    assert set(table[table.chosen].beta) == {1e-4}
    assert len(table) == len(_curve())
    assert beta_choice({"beta": 0.01, "beta_selection": None}).endswith("(no selection).")


class ForbiddenRead(AssertionError):
    """A test split was read before the final evaluations."""


class _Unreadable:
    """Stands in for a test split: any use of it raises :class:`ForbiddenRead`."""

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)

    def _refuse(self, *_args, **_kwargs):
        raise ForbiddenRead(f"{self.name} was read")

    __getattr__ = __len__ = __iter__ = __getitem__ = __bool__ = _refuse


def test_steps_02_to_04_choose_without_reading_test_data(tmp_path: Path) -> None:
    """SFT, attribution scores, subsets and β all complete with every test split unreadable;
    step 04 reads test data only after saving its choice of β, for the final tables."""
    exp = Experiment(smoke_params(tmp_path))
    assert exp.params.repair.beta is None, "the smoke params choose β"
    exp.data.check_data()
    exp.data.hh["test"] = _Unreadable("HH test")
    for aspect, splits in exp.data.trust.items():
        splits["test"] = _Unreadable(f"{aspect} test")

    run_sft(exp)
    run_attribution(exp)
    run_selection(exp)
    with pytest.raises(ForbiddenRead):
        run_repair(exp)
    step = exp.run_dir / "04_repair"
    selection = read_json(step / "beta_selection.json")
    assert selection["beta"] in exp.params.repair.beta_grid
    assert {row["target"] for row in selection["curve"]} == {*exp.params.data.trust.aspects,
                                                            "common"}
    assert len(selection["curve"]) == 2 * len(exp.params.data.trust.aspects) * len(
        exp.params.repair.beta_grid), "per β: one row per aspect target, one per aspect of common"
    assert not (step / "repair.json").exists()
