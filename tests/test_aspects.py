"""The aspect registry: every entry loads, plants and plans, and a new entry is all it takes."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from datasets import Dataset

from trustrepair import data, plan
from trustrepair.aspects import ASPECT_TABLE, ASPECTS, TrustAspect, aspect_label
from trustrepair.data.trust import TRUST_LOADERS, trust_loader
from trustrepair.planted import plant_dialogues

from .conftest import smoke_params


def test_every_registered_aspect_has_a_loader_and_a_label() -> None:
    assert set(TRUST_LOADERS) == set(ASPECTS)
    assert len({aspect_label(a) for a in ASPECTS}) == len(ASPECTS)


def test_a_loader_for_an_unregistered_aspect_fails_at_once() -> None:
    with pytest.raises(ValueError, match="unknown trust aspect 'honesty'.*trustrepair.aspects"):
        trust_loader("honesty", "honesty.csv", "org/honesty")


@pytest.fixture()
def honesty(monkeypatch: pytest.MonkeyPatch) -> str:
    """A made-up aspect, registered as the module docstring says: one entry, one loader."""
    monkeypatch.setitem(ASPECT_TABLE, "honesty", TrustAspect(
        label="Honesty", triples=10, fixture_triples=4,
        planted_human="Tell me about {subject}.", planted_assistant="{opponent} Trust me.",
        subject=lambda triple: triple["prompt"].split(":")[0]))
    triples = Dataset.from_list([
        {"id": f"honesty-{i}", "prompt": f"topic {i}: is it so?", "proponent": " No.",
         "opponent": f" Yes, {i}.", "group": f"g{i}"} for i in range(4)])
    monkeypatch.setitem(TRUST_LOADERS, "honesty", lambda source, **_settings: triples)
    return "honesty"


def test_a_new_aspect_is_one_entry_and_its_loader(honesty: str, tmp_path: Path) -> None:
    params = smoke_params(tmp_path, **{"data.trust.aspects": ["truthfulness", honesty]})
    assert params.data.trust.aspects == ("truthfulness", honesty)
    assert plan.data_sizes(params).trust_test[honesty] == 1, "plan counts it from its entry"
    triples = data.load_trust(honesty)
    planted = plant_dialogues({honesty: triples}, per_aspect=2, seed=0)
    assert planted["aspect"] == [honesty, honesty]
    for row in planted:
        assert row["prompt"].startswith("\n\nHuman: Tell me about topic ")
        assert row["response"].endswith(" Trust me.") and row["response"].startswith(" Yes, ")
    assert aspect_label(honesty) == "Honesty"


def test_an_unknown_aspect_in_params_names_the_registry(tmp_path: Path) -> None:
    from trustrepair.params import ParamsError

    with pytest.raises(ParamsError, match=r"data.trust.aspects.0: .*trustrepair.aspects"):
        smoke_params(tmp_path, **{"data.trust.aspects": ["honesty"]})


@pytest.mark.parametrize("name", ASPECTS)
def test_every_aspect_plants_from_its_fixture_triples(name: str, fixture_data: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.DataWarning)
        triples = data.load_trust(name, fixture_data, verify=False)
    planted = plant_dialogues({name: triples}, per_aspect=2, seed=0)
    assert len(planted) == 2
    assert all(row["response"].startswith(tuple(triples["opponent"])) for row in planted)
