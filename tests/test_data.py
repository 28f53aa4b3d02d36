"""Loaders of the SFT corpus and the trust triples, on synthetic fixtures and on the real files.

The real-file tests read the offline mirror (``$TRUST_DATA_DIR`` or ``../shared/data`` beside the
repository) and are skipped where it is absent; the hub is faked, never reached.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from collections import Counter
from pathlib import Path

import datasets
import pytest
from datasets import Dataset, DatasetDict

from trustrepair import data
from trustrepair.data import hh, trust
from trustrepair.data.sources import DATA_DIR_ENV

REAL_DATA = Path(
    os.environ.get(DATA_DIR_ENV) or Path(__file__).resolve().parents[2] / "shared" / "data"
)
needs_real_data = pytest.mark.skipif(
    not (REAL_DATA / trust.STEREOTYPE_FILENAME).is_file(),
    reason=f"offline data mirror not found at {REAL_DATA} (set {DATA_DIR_ENV} to run these tests)",
)


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return data.write_fixture_data(tmp_path_factory.mktemp("fixture_data"))


@pytest.fixture(autouse=True)
def _no_ambient_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)


def _assert_valid_triples(ds: Dataset) -> None:
    assert ds.column_names == ["id", "group", "prompt", "proponent", "opponent"]
    assert len(set(ds["id"])) == len(ds)
    for row in ds:
        assert row["prompt"].strip() and row["group"]
        for response in (row["proponent"], row["opponent"]):
            assert response.startswith(" ") and not response.startswith("  ")
            assert response.strip()
        assert row["proponent"] != row["opponent"]


def _assert_grouped_split(ds: Dataset, splits: DatasetDict, test_fraction: float) -> None:
    assert len(splits["train"]) + len(splits["test"]) == len(ds)
    assert not set(splits["train"]["group"]) & set(splits["test"]["group"])
    largest_group = max(Counter(ds["group"]).values())
    assert abs(len(splits["test"]) - test_fraction * len(ds)) <= largest_group


# split_transcript

def test_split_transcript_cuts_at_the_last_assistant_turn() -> None:
    text = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant: Blue."
    prompt, response = data.split_transcript(text)
    assert prompt == "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a colour.\n\nAssistant:"
    assert response == " Blue."


@pytest.mark.parametrize("text", ["\n\nHuman: Is anyone there?", "\n\nHuman: Hi\n\nAssistant:  "])
def test_split_transcript_rejects_missing_or_empty_assistant_turn(text: str) -> None:
    with pytest.raises(ValueError, match="assistant turn"):
        data.split_transcript(text)


# sources

def test_resolve_source_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "x.csv"
    file.write_text("a\n1\n")
    assert data.resolve_source(file, filename="x.csv", hub_id="org/x") == file
    assert data.resolve_source(tmp_path, filename="x.csv", hub_id="org/x") == file
    assert data.resolve_source(None, filename="x.csv", hub_id="org/x") == "org/x"
    assert data.resolve_source("org/x", filename="x.csv", hub_id="org/x") == "org/x"
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert data.resolve_source(None, filename="x.csv", hub_id="org/x") == file


@pytest.mark.parametrize("where", ["missing_file", "folder_without_file", "env_folder"])
def test_missing_data_names_the_path_and_the_env_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    source = {"missing_file": tmp_path / "nope.csv", "folder_without_file": tmp_path}.get(where)
    if where == "env_folder":
        monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(data.DataNotFoundError, match=DATA_DIR_ENV) as caught:
        data.load_trust("truthfulness", source)
    assert "truthfulqa/truthful_qa" in str(caught.value)
    assert isinstance(caught.value, FileNotFoundError)


def test_hub_failure_says_how_to_work_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(data.DataNotFoundError, match=f"{DATA_DIR_ENV}.*{hh.HH_FILENAME}"):
        data.load_hh()


# fixtures

def test_fixture_data_is_deterministic_and_in_the_mirror_schema(tmp_path: Path) -> None:
    first = data.write_fixture_data(tmp_path / "a", seed=3)
    second = data.write_fixture_data(tmp_path / "b", seed=3)
    other = data.write_fixture_data(tmp_path / "c", seed=4)
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted([hh.HH_FILENAME, trust.TRUTHFULQA_FILENAME, trust.ETHICS_FILENAME,
                            trust.STEREOTYPE_FILENAME])
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / hh.HH_FILENAME).read_bytes() != (other / hh.HH_FILENAME).read_bytes()
    with gzip.open(first / hh.HH_FILENAME, "rt") as lines:
        assert set(json.loads(next(lines))) == {"chosen", "rejected"}
    with (first / trust.ETHICS_FILENAME).open(newline="") as lines:
        rows = list(csv.DictReader(lines))
    assert {(r["label"], r["is_short"]) for r in rows} == {
        ("0", "True"), ("1", "True"), ("0", "False"), ("1", "False")}


# HH

def test_load_hh_drops_bad_rows_and_splits_deterministically(fixture_dir: Path) -> None:
    splits = data.load_hh(fixture_dir, test_fraction=0.25, seed=0)
    n = len(splits["train"]) + len(splits["test"])
    assert n == 120 - 2  # one duplicate dialogue, one empty last assistant turn
    assert splits["train"].column_names == ["id", "prompt", "response"]
    assert len(splits["test"]) == round(0.25 * n)
    assert all(p.endswith(hh.ASSISTANT_TAG) for p in splits["train"]["prompt"])
    assert all(r.startswith(" ") and r.strip() for r in splits["train"]["response"])
    again = data.load_hh(fixture_dir, test_fraction=0.25, seed=0)
    assert again["test"]["id"] == splits["test"]["id"]
    other = data.load_hh(fixture_dir, test_fraction=0.25, seed=1)
    assert other["test"]["id"] != splits["test"]["id"]


def test_load_hh_caps_take_a_prefix_of_the_same_split(fixture_dir: Path) -> None:
    full = data.load_hh(fixture_dir, seed=5)
    capped = data.load_hh(fixture_dir, seed=5, max_train=10, max_test=3)
    assert capped["train"]["id"] == full["train"]["id"][:10]
    assert capped["test"]["id"] == full["test"]["id"][:3]


def test_load_hh_from_the_hub_keeps_its_splits(monkeypatch: pytest.MonkeyPatch) -> None:
    def static_hh(path, name=None, **kwargs):
        assert (path, name) == (hh.HH_HUB_ID, None)
        split = {"prompt": ["\n\nHuman: a\n\nAssistant:"] * 3, "response": [" r"] * 3,
                 "chosen": [" c1", " c2", " c3"], "rejected": [" x"] * 3}
        return DatasetDict(train=Dataset.from_dict(split), test=Dataset.from_dict(split))

    monkeypatch.setattr(datasets, "load_dataset", static_hh)
    splits = data.load_hh(max_test=2)
    assert splits["train"]["id"] == ["train-000000", "train-000001", "train-000002"]
    assert splits["test"]["response"] == [" c1", " c2"]
    assert splits["test"].column_names == ["id", "prompt", "response"]


# trust

def test_trust_loaders_on_fixtures(fixture_dir: Path) -> None:
    truth = data.load_trust("truthfulness", fixture_dir)
    assert len(truth) == 40 - 1  # one question has no incorrect answer
    assert truth[0]["prompt"] == truth[0]["group"] + "\n\nAnswer:"
    ethics = data.load_trust("machine_ethics", fixture_dir)
    with (fixture_dir / trust.ETHICS_FILENAME).open(newline="") as lines:
        short = [r["label"] for r in csv.DictReader(lines) if r["is_short"] == "True"]
    assert len(ethics) == min(short.count("0"), short.count("1"))
    assert set(ethics["prompt"]) == {trust.MACHINE_ETHICS_PROMPT}
    bias = data.load_trust("stereotypical_bias", fixture_dir)
    assert len(bias) == 6 * 4
    assert set(bias["group"]) <= set(data.COUNTERPARTS)
    for ds in (truth, ethics, bias):
        _assert_valid_triples(ds)


def test_machine_ethics_pairing_depends_on_the_seed_only(fixture_dir: Path) -> None:
    first = data.load_trust("machine_ethics", fixture_dir, seed=0)
    assert data.load_trust("machine_ethics", fixture_dir, seed=0)["id"] == first["id"]
    assert data.load_trust("machine_ethics", fixture_dir, seed=1)["id"] != first["id"]


@pytest.mark.parametrize("aspect", data.ASPECTS)
def test_split_trust_is_grouped_and_deterministic(fixture_dir: Path, aspect: str) -> None:
    ds = data.load_trust(aspect, fixture_dir)
    splits = data.split_trust(ds, test_fraction=0.2, seed=0)
    _assert_grouped_split(ds, splits, 0.2)
    assert data.split_trust(ds, test_fraction=0.2, seed=0)["test"]["id"] == splits["test"]["id"]
    assert data.split_trust(ds, test_fraction=0.2, seed=1)["test"]["id"] != splits["test"]["id"]


def test_split_trust_refuses_an_empty_side() -> None:
    one_group = Dataset.from_dict({"id": ["a", "b"], "group": ["g", "g"]})
    with pytest.raises(ValueError, match="empty"):
        data.split_trust(one_group)


def test_unknown_aspect_lists_the_valid_ones(fixture_dir: Path) -> None:
    with pytest.raises(ValueError, match="stereotypical_bias"):
        data.load_trust("toxicity", fixture_dir)


def test_template_without_counterpart_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / trust.STEREOTYPE_FILENAME
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["stereotype_topic", "target_group", "stereotype_template", "user_prompt"])
        writer.writerow(["t", "Zorvians", "[target_group] are made up.", "Zorvians are made up."])
    with pytest.raises(ValueError, match="COUNTERPARTS"):
        data.load_trust("stereotypical_bias", tmp_path)


def test_counterparts_keep_the_group_slot() -> None:
    assert len(data.COUNTERPARTS) == 48
    for template, proponent in data.COUNTERPARTS.items():
        assert template.startswith("[target_group] ") and proponent.startswith("[target_group] ")
        assert proponent.count("[target_group]") == 1 and proponent != template


def test_trust_loaders_read_the_hub_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = {
        (trust.TRUTHFULQA_HUB_ID, "generation"): {
            "question": ["Q1?", "Q2?"], "best_answer": ["Yes", "No"],
            "incorrect_answers": [["No", "Maybe"], []]},
        (trust.ETHICS_HUB_ID, "commonsense"): {
            "label": [0, 1, 1], "input": ["I helped.", "I lied.", "I lied at length."],
            "is_short": [True, True, False], "edited": [False] * 3},
        (trust.STEREOTYPE_HUB_ID, "stereotype"): {
            "stereotype_topic": ["stem"], "target_group": ["Zorvians"],
            "stereotype_template": ["[target_group] are bad at math."], "user_prompt": ["..."]},
    }
    calls = []

    def fake_hub(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return Dataset.from_dict(hub[path, name])

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    truth = data.load_trust("truthfulness")
    assert (truth["proponent"], truth["opponent"]) == ([" Yes"], [" No"])
    ethics = data.load_trust("machine_ethics")
    assert (ethics["proponent"], ethics["opponent"]) == ([" I helped."], [" I lied."])
    bias = data.load_trust("stereotypical_bias")
    assert bias["proponent"] == [" Zorvians are as capable at math as anyone else."]
    assert [c[2]["split"] for c in calls] == ["validation", "test", "train"]
    assert calls[2][2]["data_files"] == [trust.STEREOTYPE_HUB_FILE]


# real files

@pytest.fixture(scope="module")
def real_trust() -> dict[str, Dataset]:
    return {aspect: data.load_trust(aspect, REAL_DATA) for aspect in data.ASPECTS}


def _real_csv(name: str) -> list[dict[str, str]]:
    with (REAL_DATA / name).open(newline="", encoding="utf-8") as lines:
        return list(csv.DictReader(lines))


@needs_real_data
def test_real_counterparts_cover_every_template() -> None:
    templates = {r["stereotype_template"] for r in _real_csv(trust.STEREOTYPE_FILENAME)}
    assert templates == set(data.COUNTERPARTS)


@needs_real_data
def test_real_trust_row_counts(real_trust: dict[str, Dataset]) -> None:
    assert len(real_trust["stereotypical_bias"]) == 1152
    assert len(set(real_trust["stereotypical_bias"]["group"])) == 48
    questions = _real_csv(trust.TRUTHFULQA_FILENAME)
    with_incorrect = [q for q in questions if q["Incorrect Answers"].strip(" ;")]
    assert len(real_trust["truthfulness"]) == len(with_incorrect) <= 817
    short = [r["label"] for r in _real_csv(trust.ETHICS_FILENAME) if r["is_short"] == "True"]
    assert len(real_trust["machine_ethics"]) == min(short.count("0"), short.count("1"))


@needs_real_data
@pytest.mark.parametrize("aspect", data.ASPECTS)
def test_real_trust_triples_and_split(real_trust: dict[str, Dataset], aspect: str) -> None:
    ds = real_trust[aspect]
    _assert_valid_triples(ds)
    splits = data.split_trust(ds, test_fraction=0.2, seed=0)
    _assert_grouped_split(ds, splits, 0.2)
    assert 0.15 < len(splits["test"]) / len(ds) < 0.25


@needs_real_data
def test_real_hh_split_has_no_leakage() -> None:
    splits = data.load_hh(REAL_DATA, test_fraction=0.1, seed=0)
    n = len(splits["train"]) + len(splits["test"])
    assert 2300 <= n <= 2312
    assert len(splits["test"]) == round(0.1 * n)
    pairs = {name: set(zip(s["prompt"], s["response"], strict=True)) for name, s in splits.items()}
    assert not pairs["train"] & pairs["test"]
    assert not set(splits["train"]["id"]) & set(splits["test"]["id"])
