"""Planted harmful dialogues and the recovery metrics."""

from __future__ import annotations

import pytest
import torch

from trustrepair.data import load_trust, split_trust
from trustrepair.planted import (
    PLANTED_PREFIX,
    auroc,
    plant_dialogues,
    planted_mask,
    precision_at_k,
    recovery_table,
    roc_curve,
)
from trustrepair.recovery import opponent_similarity
from trustrepair.uncertainty import Bootstrap


@pytest.fixture(scope="module")
def trust_train(fixture_data):
    return {a: split_trust(load_trust(a, fixture_data, verify=False))["train"]
            for a in ("truthfulness", "machine_ethics", "stereotypical_bias")}


def test_planted_dialogues_assert_train_opponents_in_new_wording(trust_train) -> None:
    planted = plant_dialogues(trust_train, 3, seed=1)
    assert len(planted) == 9 and len(set(planted["id"])) == 9
    assert all(i.startswith(PLANTED_PREFIX) for i in planted["id"])
    for row in planted:
        triples = trust_train[row["aspect"]]
        assert row["prompt"].startswith("\n\nHuman: ") and row["prompt"].endswith("\n\nAssistant:")
        assert row["prompt"] not in triples["prompt"], "wording must differ from the eval prompts"
        if row["aspect"] != "machine_ethics":
            assert row["response"] in triples["opponent"]
        else:  # the assistant tells of the wrong act itself: the response loss sees it
            assert any(row["response"].startswith(o) for o in triples["opponent"])
            assert not any(o in row["prompt"] for o in triples["opponent"])
    assert plant_dialogues(trust_train, 3, seed=1)["id"] == planted["id"]
    bias = planted.filter(lambda r: r["aspect"] == "stereotypical_bias")["response"]
    assert len(set(bias)) == len(bias), "each planted stereotype once"
    with pytest.raises(ValueError, match="planted.per_aspect=1000"):
        plant_dialogues(trust_train, 1000)


def test_auroc_and_precision_against_hand_counts() -> None:
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.5])
    positive = torch.tensor([1, 0, 1, 0, 1, 0])
    # pairs (pos > neg): 0.9 beats 3, 0.7 beats 2, 0.5 ties one (0.5) and beats none -> 5.5 / 9
    assert auroc(scores, positive) == pytest.approx(5.5 / 9)
    assert auroc(-scores, positive) == pytest.approx(1 - 5.5 / 9)
    assert precision_at_k(scores, positive, 3) == pytest.approx(2 / 3)
    fpr, tpr = roc_curve(scores, positive)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    with pytest.raises(ValueError):
        auroc(scores, torch.ones(6))


def test_recovery_table_scores_a_perfect_ranker_perfectly() -> None:
    ids = ["hh-1", "planted-truthfulness-000", "hh-2", "planted-truthfulness-001",
           "planted-machine_ethics-000"]
    perfect = planted_mask(ids, "truthfulness").double()
    table = recovery_table({"oracle": {"truthfulness": perfect}}, ids, k=2, bootstrap=Bootstrap())
    assert table.to_dict(orient="records") == [
        {"method": "oracle", "aspect": "truthfulness", "auroc": 1.0, "auroc_ci_low": 1.0,
         "auroc_ci_high": 1.0, "precision_at_k": 1.0}]


def test_opponent_similarity_picks_the_nearest_opponent() -> None:
    train = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    opponents = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    sim = opponent_similarity(train, opponents)
    assert sim.tolist() == pytest.approx([0.0, 1.0, 2 ** -0.5])


def test_planted_from_validation_repeats_no_attribution_query(tmp_path) -> None:
    """``planted.source: validation`` asserts statements no query holds; with the template
    split, the planted stereotypes fill templates no query fills."""
    from trustrepair.experiment import Experiment

    from .conftest import smoke_params

    exp = Experiment(smoke_params(tmp_path, **{"planted.per_aspect": 2,
                                                "planted.source": "validation",
                                                "data.trust.bias_split": "template"}))
    sft = exp.data.hh["train"]
    planted = sft.select([i for i, x in enumerate(sft["id"]) if x.startswith(PLANTED_PREFIX)])
    assert len(planted) == 2 * len(exp.data.trust)
    for aspect, splits in exp.data.trust.items():
        responses = [r for r, x in zip(planted["response"], planted["id"], strict=True)
                     if x.startswith(f"{PLANTED_PREFIX}{aspect}-")]
        queries = set(splits["train"]["opponent"])
        assert not any(r.startswith(q) for r in responses for q in queries), aspect
        held = dict(zip(splits["validation"]["opponent"], splits["validation"]["group"],
                        strict=False))
        sources = {held[o] for r in responses for o in held if r.startswith(o)}
        assert sources and not sources & set(splits["train"]["group"]), aspect


def test_fine_tuned_lowers_the_dialogues_loss_and_leaves_the_model_alone(tmp_path) -> None:
    from trustrepair.experiment import Experiment
    from trustrepair.metrics import response_nll
    from trustrepair.recovery import fine_tuned

    from .conftest import smoke_params

    exp = Experiment(smoke_params(tmp_path))
    model, tokenizer = exp.models.load()
    dialogues = exp.data.hh["train"].select(range(4))
    before = [p.detach().clone() for p in model.parameters()]
    tuned = fine_tuned(model, tokenizer, dialogues, steps=3, lr=1e-3, max_length=64)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    loss = {name: response_nll(m, tokenizer, dialogues, max_length=64).nll.sum()
            for name, m in (("before", model), ("after", tuned))}
    assert loss["after"] < loss["before"]


def test_the_harm_check_finds_plants_that_copy_the_queries_harmful(tmp_path) -> None:
    """Plants from the *train* split assert the queries' own opponents: a fine-tune on them
    must raise F_j on those queries more than one on ordinary dialogues."""
    from trustrepair.experiment import Experiment
    from trustrepair.recovery import planted_harm

    from .conftest import smoke_params

    exp = Experiment(smoke_params(tmp_path, **{"planted.per_aspect": 3,
                                                "planted.source": "train",
                                                "planted.harm_control": 6}))
    rows = planted_harm(exp, *exp.models.load())
    assert [r["aspect"] for r in rows] == list(exp.data.trust)
    for row in rows:
        assert row["planted"] == 3 and row["control"] == 6
        assert row["excess_logodds_ci_low"] <= row["excess_logodds"] <= row[
            "excess_logodds_ci_high"]
        assert row["harmful"] == (row["excess_logodds_ci_low"] > 0)
    assert all(r["excess_logodds"] > 0 for r in rows), rows
