"""Phases record where a run's seconds go, outside its results, and only when asked."""

from __future__ import annotations

import json
import time

import pytest

from trustrepair.profiling import PROFILE_ENV, per_step, phase


def test_no_profile_file_no_record(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(PROFILE_ENV, raising=False)
    with phase("anything"):
        pass
    assert not list(tmp_path.iterdir())


def test_a_phase_excludes_the_phases_inside_it(tmp_path, monkeypatch) -> None:
    profile = tmp_path / "profile.jsonl"
    monkeypatch.setenv(PROFILE_ENV, str(profile))
    with phase("outer"):
        time.sleep(0.05)
        with phase("inner"):
            time.sleep(0.1)
    lines = {r["phase"]: r for r in map(json.loads, profile.read_text().splitlines())}
    assert lines["inner"]["seconds"] >= 0.1
    assert 0.05 <= lines["outer"]["seconds"] < 0.1
    with pytest.raises(RuntimeError), phase("failing"):
        raise RuntimeError
    assert "failing" in profile.read_text()


def test_lines_count_in_the_step_they_ended_in_and_the_rest_is_other() -> None:
    steps = {"01_sft": {"started": 100.0, "seconds": 50.0},
             "02_attribution": {"started": 150.0, "seconds": 20.0},
             "03_dpp": {"status": "running", "started": 170.0}}
    lines = [{"phase": "SFT", "end": 140.0, "seconds": 30.0},
             {"phase": "loading models", "end": 120.0, "seconds": 2.0},
             {"phase": "loading models", "end": 160.0, "seconds": 1.0},
             {"phase": "SFT", "end": 500.0, "seconds": 9.0}]
    assert per_step(lines, steps) == {
        "01_sft": {"SFT": 30.0, "loading models": 2.0, "other": 18.0},
        "02_attribution": {"loading models": 1.0, "other": 19.0}}
