"""The step registry: it and the notebooks agree, and it finds every output by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustrepair.params import Params
from trustrepair.runner import notebooks
from trustrepair.steps import (
    ABLATIONS,
    ALL_SECTIONS,
    ATTRIBUTION,
    PLANTED,
    SFT,
    STEPS,
    enabled,
    reads,
    sections_through,
)

from .conftest import ROOT, smoke_params


def test_every_notebook_is_a_registered_step_and_back() -> None:
    assert [nb.name for nb in notebooks(ROOT / "notebooks")] == [s.notebook for s in STEPS]


def test_each_section_a_step_reads_is_a_params_section() -> None:
    for step in STEPS:
        assert set(step.reads) <= set(Params.model_fields), step.name


def test_a_step_depends_on_what_every_earlier_step_reads() -> None:
    assert sections_through(SFT) == SFT.reads
    assert set(sections_through(ABLATIONS)) == {s for step in STEPS[:STEPS.index(ABLATIONS) + 1]
                                                for s in step.reads}
    assert "ablations" not in sections_through(ATTRIBUTION)


def test_a_notebook_outside_the_registry_reads_everything_and_always_runs(
        tmp_path: Path) -> None:
    params = smoke_params(tmp_path)
    assert reads("01_write") == ALL_SECTIONS
    assert enabled("01_write", params)
    assert not enabled(PLANTED.name, params), "smoke plants nothing"
    assert enabled(PLANTED.name, smoke_params(tmp_path, **{"planted.per_aspect": 2}))


def test_outputs_are_found_by_name(tmp_path: Path) -> None:
    assert ATTRIBUTION.output(tmp_path, "ranked", target="common") == \
        tmp_path / "02_attribution" / "scores_common.csv"
    with pytest.raises(KeyError, match="02_attribution writes no 'weights'; its outputs are"):
        ATTRIBUTION.output(tmp_path, "weights")
    with pytest.raises(FileNotFoundError, match=r"run that step first .*--only 02\)"):
        ATTRIBUTION.require(tmp_path, "scores")
    ATTRIBUTION.output(tmp_path, "scores").parent.mkdir()
    ATTRIBUTION.output(tmp_path, "scores").write_bytes(b"")
    assert ATTRIBUTION.require(tmp_path, "scores").exists()


@pytest.mark.parametrize(("step", "path", "artifact"), [
    (ABLATIONS, "ablations.json", "result"),
    (ABLATIONS, "dpo/adapter/weights.bin", "dpo"),
    (ABLATIONS, "retrain_random/model/config.json", "retrained"),
    (ABLATIONS, "evals/validation/ours.json", "validation_evaluation"),
    (ABLATIONS, "evals/ours.json", "evaluation"),
    (ATTRIBUTION, "scores_truthfulness.csv", "ranked"),
    (SFT, "model/config.json", "model"),
    (SFT, "notes.txt", None),
])
def test_each_written_file_belongs_to_one_declared_output(step, path: str,
                                                           artifact: str | None) -> None:
    assert step.artifact_of(path) == artifact
