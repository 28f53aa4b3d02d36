"""Loaders of the SFT corpus and the trust triples, on synthetic fixtures and on the real files.

The real-file tests read the offline mirror (``$TRUST_DATA_DIR`` or ``../shared/data`` beside the
repository) and are skipped where it is absent; the hub is faked, never reached. Damaged files are
fixture files broken on purpose: each must fail with one ``DataError`` sentence or, for a few
unusable rows, warn with the count per reason.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import re
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import datasets
import pytest
from datasets import Dataset, DatasetDict

from trustrepair import cli, data
from trustrepair.aspects import ASPECT_TABLE
from trustrepair.data import hh, trust
from trustrepair.data.published import PublishedFile
from trustrepair.data.sources import DATA_DIR_ENV
from trustrepair.run_data import RunData

from .conftest import smoke_params

AMBIENT_DATA_DIR = os.environ.get(DATA_DIR_ENV)  # read before _no_ambient_data_dir clears it
REAL_DATA = Path(AMBIENT_DATA_DIR or Path(__file__).resolve().parents[2] / "shared" / "data")
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


LOADINGS = {  # every way a loader builds an aspect's triples: (aspect, load_trust keywords)
    "truthfulness": ("truthfulness", {}),
    "machine_ethics": ("machine_ethics", {}),
    "machine_ethics-random": ("machine_ethics", {"ethics_pairing": "random"}),
    "stereotypical_bias": ("stereotypical_bias", {}),
    "stereotypical_bias-template": ("stereotypical_bias", {"bias_split": "template"}),
    "stereotypical_bias-own": ("stereotypical_bias", {"bias_proponents": "own"}),
}


def _assert_valid_triples(ds: Dataset) -> None:
    assert ds.column_names == ["id", "group", "stratum", "prompt", "proponent", "opponent"]
    assert len(set(ds["id"])) == len(ds)
    for row in ds:
        assert row["prompt"].strip() and row["group"]
        for response in (row["proponent"], row["opponent"]):
            assert response.startswith(" ") and not response.startswith("  ")
            assert response.strip()
        assert row["proponent"] != row["opponent"]


def _assert_grouped_split(ds: Dataset, splits: DatasetDict, test_fraction: float) -> None:
    """Every row on one side, no group on both, and the test share off by at most one group;
    with strata, each stratum of two or more groups on both sides and near its own share."""
    assert sorted([*splits["train"]["id"], *splits["test"]["id"]]) == sorted(ds["id"])
    assert not set(splits["train"]["group"]) & set(splits["test"]["group"])
    largest_group = max(Counter(ds["group"]).values())
    groups_in: dict[str, set[str]] = {}
    for group, stratum in zip(ds["group"], ds["stratum"], strict=True):
        groups_in.setdefault(stratum, set()).add(group)
    if len(groups_in) == 1:
        assert abs(len(splits["test"]) - test_fraction * len(ds)) <= largest_group
        return
    rows_in, tested = Counter(ds["stratum"]), Counter(splits["test"]["stratum"])
    for stratum, groups in groups_in.items():
        if len(groups) > 1:
            assert 0 < tested[stratum] < rows_in[stratum]
        assert abs(tested[stratum] - test_fraction * rows_in[stratum]) <= 2 * largest_group


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
                            trust.STEREOTYPE_FILENAME, trust.ANTI_STEREOTYPE_FILENAME,
                            "bbq-Age.jsonl.gz", "bbq-Religion.jsonl.gz",
                            "moralchoice-low-ambiguity.csv"])
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

def test_load_hh_drops_bad_rows_and_splits_deterministically(fixture_dir: Path, capsys) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", data.DataWarning)  # 1 row in 120: said, not warned
        splits = data.load_hh(fixture_dir, test_fraction=0.25, seed=0, verify=False)
    assert "dropped 1 of 120 rows as unusable (empty last assistant turn: 1)" in \
        capsys.readouterr().out
    n = len(splits["train"]) + len(splits["test"])
    assert n == 120 - 2  # one duplicate dialogue, one empty last assistant turn
    assert splits["train"].column_names == ["id", "prompt", "response"]
    assert len(splits["test"]) == round(0.25 * n)
    assert all(p.endswith(hh.ASSISTANT_TAG) for p in splits["train"]["prompt"])
    assert all(r.startswith(" ") and r.strip() for r in splits["train"]["response"])
    again = data.load_hh(fixture_dir, test_fraction=0.25, seed=0, verify=False)
    assert again["test"]["id"] == splits["test"]["id"]
    other = data.load_hh(fixture_dir, test_fraction=0.25, seed=1, verify=False)
    assert other["test"]["id"] != splits["test"]["id"]


def test_load_hh_caps_take_a_prefix_of_the_same_split(fixture_dir: Path) -> None:
    full = data.load_hh(fixture_dir, seed=5, verify=False)
    capped = data.load_hh(fixture_dir, seed=5, max_train=10, max_test=3, verify=False)
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

def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as lines:
        return list(csv.DictReader(lines))


def _assert_minimal_pairs(ds: Dataset, rows: list[dict[str, str]]) -> None:
    """Each triple is two adjacent short rows of the file: the acceptable one the proponent,
    the wrong one the opponent, and no row in two triples."""
    used = []
    for row in ds:
        right_at, wrong_at = (int(at) for at in row["id"].split("-")[1:])
        assert abs(right_at - wrong_at) == 1 and row["group"] == row["id"]
        right, wrong = rows[right_at], rows[wrong_at]
        assert (right["label"], wrong["label"]) == ("0", "1")
        assert right["is_short"] == wrong["is_short"] == "True"
        assert row["proponent"] == " " + " ".join(right["input"].split())
        assert row["opponent"] == " " + " ".join(wrong["input"].split())
        used += [right_at, wrong_at]
    assert len(used) == len(set(used))


def _assert_anti_stereotype_pairing(ds: Dataset, rows: list[dict[str, str]],
                                    anti_stereotypes: dict[str, tuple[str, ...]]) -> None:
    """Every (template, group) statement of the file against its topic's three
    ``anti_stereotypes`` for the same group, and nothing else."""
    expected = Counter()
    for row in rows:
        group, statement = row["target_group"], row["stereotype_template"]
        for anti in anti_stereotypes[row["stereotype_topic"]]:
            expected[trust.STEREOTYPE_PROMPT.format(target_group=group),
                     " " + anti.replace("[target_group]", group),
                     " " + statement.replace("[target_group]", group)] += 1
    built = Counter(zip(ds["prompt"], ds["proponent"], ds["opponent"], strict=True))
    assert built == expected and set(built.values()) == {1}


def test_trust_loaders_on_fixtures(fixture_dir: Path) -> None:
    with pytest.warns(data.DataWarning, match=r"1 of 40 rows .*\(no incorrect answer: 1\)"):
        truth = data.load_trust("truthfulness", fixture_dir, verify=False)
    assert len(truth) == 40 - 1  # one question has no incorrect answer
    assert truth[0]["prompt"] == truth[0]["group"] + "\n\nAnswer:"
    ethics_rows = _csv_rows(fixture_dir / trust.ETHICS_FILENAME)
    ethics = data.load_trust("machine_ethics", fixture_dir, verify=False)
    _assert_minimal_pairs(ethics, ethics_rows)
    assert set(ethics["prompt"]) == {trust.MACHINE_ETHICS_PROMPT}
    random_pairs = data.load_trust("machine_ethics", fixture_dir, ethics_pairing="random",
                                   verify=False)
    short = [r["label"] for r in ethics_rows if r["is_short"] == "True"]
    assert len(random_pairs) == min(short.count("0"), short.count("1")) > len(ethics)
    bias_rows = _csv_rows(fixture_dir / trust.STEREOTYPE_FILENAME)
    bias = data.load_trust("stereotypical_bias", fixture_dir, verify=False)
    authors = {}
    for row in _csv_rows(fixture_dir / trust.ANTI_STEREOTYPE_FILENAME):
        authors.setdefault(row["stereotype_topic"], []).append(row["antistereotype_template"])
    _assert_anti_stereotype_pairing(bias, bias_rows, authors)
    own = data.load_trust("stereotypical_bias", fixture_dir, bias_proponents="own", verify=False)
    _assert_anti_stereotype_pairing(own, bias_rows, data.ANTI_STEREOTYPES)
    assert (own["id"], own["group"], own["opponent"]) == (bias["id"], bias["group"],
                                                          bias["opponent"]), "the same units"
    assert not set(own["proponent"]) & set(bias["proponent"])
    assert set(bias["stratum"]) == {r["target_group"] for r in bias_rows}
    assert set(bias["group"]) == {f"{r['stereotype_topic']}|{r['target_group']}"
                                  for r in bias_rows}
    by_template = data.load_trust("stereotypical_bias", fixture_dir, bias_split="template",
                                  verify=False)
    assert set(by_template["group"]) == {r["stereotype_template"] for r in bias_rows}
    assert set(by_template["stratum"]) == {""}
    for ds in (truth, ethics, random_pairs, bias, own, by_template):
        _assert_valid_triples(ds)


def test_fixture_triple_counts_match_the_plan(fixture_dir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.DataWarning)
        counts = {aspect: len(data.load_trust(aspect, fixture_dir, verify=False))
                  for aspect in data.ASPECTS}
    assert counts == {name: entry.fixture_triples for name, entry in ASPECT_TABLE.items()}


def test_minimal_pairs_rule() -> None:
    """Adjacent positions, opposite labels, token Jaccard above one half, rows used once."""
    short = [
        (0, 1, "I hid my sister's kettle."), (1, 0, "I found my sister's kettle."),  # 5/7
        (2, 1, "I found my sister's violin."),  # would pair with 1, but 1 is taken
        (4, 0, "I fixed my sister's violin."),  # would pair with 2, but is not adjacent
        (5, 1, "I broke my sister's old violin."),  # 5/8 with 4
        (6, 0, "We sang."), (7, 1, "I fed the dog."),  # 0/6
        (8, 1, "I fed the cat."),  # 3/5 with 7, but the same label
        (9, 0, "I walked the dog."), (10, 1, "I kicked the dog."),  # 3/5
        (11, 0, "A b c."), (12, 1, "A b d."),  # 2/4: exactly one half does not pair
    ]
    pairs = trust.minimal_pairs(short)
    assert [(right[0], wrong[0]) for right, wrong in pairs] == [(1, 0), (4, 5), (9, 10)]
    assert pairs[0] == ((1, "I found my sister's kettle."), (0, "I hid my sister's kettle."))


def test_machine_ethics_pairing_depends_on_the_seed_only_when_random(fixture_dir: Path) -> None:
    def pairs(seed: int, pairing: str) -> list[str]:
        return data.load_trust("machine_ethics", fixture_dir, seed=seed, ethics_pairing=pairing,
                               verify=False)["id"]

    assert pairs(0, "random") == pairs(0, "random") != pairs(1, "random")
    assert pairs(0, "minimal_pairs") == pairs(1, "minimal_pairs")


@pytest.mark.parametrize("loading", LOADINGS)
def test_split_trust_is_grouped_and_deterministic(fixture_dir: Path, loading: str) -> None:
    aspect, options = LOADINGS[loading]
    ds = data.load_trust(aspect, fixture_dir, **options, verify=False)
    splits = data.split_trust(ds, test_fraction=0.2, seed=0)
    _assert_grouped_split(ds, splits, 0.2)
    assert data.split_trust(ds, test_fraction=0.2, seed=0)["test"]["id"] == splits["test"]["id"]
    assert data.split_trust(ds, test_fraction=0.2, seed=1)["test"]["id"] != splits["test"]["id"]
    validation = data.split_trust(splits["train"], test_fraction=0.2, seed=0)
    _assert_grouped_split(splits["train"], validation, 0.2)


def test_split_trust_puts_every_stratum_on_both_sides() -> None:
    """Strata of four single-row groups at 20 %: rounding alone would leave some out of test."""
    strata = [f"s{i // 4}" for i in range(20)]
    ds = Dataset.from_dict({"id": [str(i) for i in range(20)], "group": [str(i) for i in range(20)],
                            "stratum": strata})
    splits = data.split_trust(ds, test_fraction=0.2, seed=0)
    assert sorted(Counter(splits["test"]["stratum"]).values()) == [1] * 5
    spanning = Dataset.from_dict({"id": ["a", "b"], "group": ["g", "g"], "stratum": ["x", "y"]})
    with pytest.raises(ValueError, match="spans the strata"):
        data.split_trust(spanning)


def test_split_trust_refuses_an_empty_side() -> None:
    one_group = Dataset.from_dict({"id": ["a", "b"], "group": ["g", "g"]})
    with pytest.raises(ValueError, match="empty"):
        data.split_trust(one_group)


def test_unknown_aspect_and_settings_list_the_valid_ones(fixture_dir: Path) -> None:
    with pytest.raises(ValueError, match="stereotypical_bias"):
        data.load_trust("toxicity", fixture_dir, verify=False)
    with pytest.raises(ValueError, match="'group', 'template'"):
        data.load_trust("stereotypical_bias", fixture_dir, bias_split="topic", verify=False)
    with pytest.raises(ValueError, match="'minimal_pairs', 'random'"):
        data.load_trust("machine_ethics", fixture_dir, ethics_pairing="nearest", verify=False)


def test_topic_without_anti_stereotypes_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / trust.STEREOTYPE_FILENAME
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["stereotype_topic", "target_group", "stereotype_template", "user_prompt"])
        writer.writerow(["gardening", "Zorvians", "[target_group] wilt.", "Zorvians wilt."])
    with pytest.raises(ValueError, match="'gardening'.*ANTI_STEREOTYPES"):
        data.load_trust("stereotypical_bias", tmp_path, bias_proponents="own", verify=False)
    (tmp_path / trust.ANTI_STEREOTYPE_FILENAME).write_text(
        "stereotype_topic,antistereotype_template\nstem,[target_group] add up.\n")
    with pytest.raises(ValueError, match="'gardening'.*anti-stereotype file.*: own"):
        data.load_trust("stereotypical_bias", tmp_path, verify=False)


@pytest.mark.parametrize("where", ["folder", "env_folder", "no_env"])
def test_missing_authors_anti_stereotypes_name_the_file_and_the_own_alternative(
        tmp_path: Path, fixture_dir: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    (tmp_path / trust.STEREOTYPE_FILENAME).write_bytes(
        (fixture_dir / trust.STEREOTYPE_FILENAME).read_bytes())
    source = tmp_path if where == "folder" else None
    if where == "env_folder":
        monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(data.DataNotFoundError) as caught:
        data.load_anti_stereotypes(source)
    message = str(caught.value)
    assert message.startswith(f"{trust.ANTI_STEREOTYPE_FILENAME}, the paper's bias proponents, "
                              f"not found")
    assert "\n" not in message and message.endswith(
        "set data.trust.bias_proponents: own to use this package's own anti-stereotypes.")
    assert (str(tmp_path) in message) == (where != "no_env")
    if where != "no_env":
        with pytest.raises(data.DataNotFoundError, match="bias_proponents: own"):
            data.load_trust("stereotypical_bias", source, verify=False)
        own = data.load_trust("stereotypical_bias", source, bias_proponents="own", verify=False)
        assert len(own) == ASPECT_TABLE["stereotypical_bias"].fixture_triples


HEDGES = ("no", "not", "cannot", "never", "nor", "none", "most", "mostly", "many", "some",
          "often", "usually", "generally", "sometimes", "may", "might", "can", "could", "likely",
          "anyone", "everyone", "others", "else", "equally", "defined", "regardless", "also")
"""Words that weaken or negate a claim: an anti-stereotype affirms, with none of them."""
HEDGE_PHRASES = (r"\bas \w+ as\b", r"\blike everyone\b", r"\bmore likely\b", r"\bcan be\b",
                 r"\bnot defined by\b", r"n't\b")
STOP_WORDS = {"are", "is", "the", "a", "an", "to", "of", "and", "with", "at", "in", "on", "for"}


def _words(sentence: str) -> list[str]:
    return re.findall(r"[a-z]+", sentence.replace("[target_group]", "").lower())


def test_anti_stereotypes_are_short_affirmative_and_slot_first() -> None:
    assert len(data.ANTI_STEREOTYPES) == 16
    sentences = [s for three in data.ANTI_STEREOTYPES.values() for s in three]
    assert len(sentences) == len(set(sentences)) == 48
    for sentence in sentences:
        assert sentence.startswith("[target_group] ") and sentence.count("[target_group]") == 1
        assert sentence.endswith(".") and len(sentence.split()) <= 12, sentence
        assert not set(_words(sentence)) & set(HEDGES), sentence
        assert not any(re.search(phrase, sentence.lower()) for phrase in HEDGE_PHRASES), sentence


def test_trust_loaders_read_the_hub_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    hub = {
        (trust.TRUTHFULQA_HUB_ID, "generation"): {
            "question": ["Q1?", "Q2?"], "best_answer": ["Yes", "No"],
            "incorrect_answers": [["No", "Maybe"], ["", "Yes"]]},
        (trust.ETHICS_HUB_ID, "commonsense"): {
            "label": [1, 0, 1], "input": ["I hit my friend.", "I helped my friend.",
                                          "I hit my friend at length."],
            "is_short": [True, True, False], "edited": [False] * 3},
        (trust.STEREOTYPE_HUB_ID, "stereotype"): {
            "stereotype_topic": ["stem"], "target_group": ["Zorvians"],
            "stereotype_template": ["[target_group] fail at sums."], "user_prompt": ["..."]},
    }
    calls = []

    def fake_hub(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return Dataset.from_dict(hub[path, name])

    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    truth = data.load_trust("truthfulness")
    assert (truth["proponent"], truth["opponent"]) == ([" Yes", " No"], [" No", " Yes"])
    ethics = data.load_trust("machine_ethics")
    assert (ethics["proponent"], ethics["opponent"]) == ([" I helped my friend."],
                                                         [" I hit my friend."])
    with pytest.raises(data.DataNotFoundError, match="no hub copy.*bias_proponents: own"):
        data.load_trust("stereotypical_bias")
    bias = data.load_trust("stereotypical_bias", bias_proponents="own")
    assert bias["proponent"] == [" " + a.replace("[target_group]", "Zorvians")
                                 for a in data.ANTI_STEREOTYPES["stem"]]
    assert bias["opponent"] == [" Zorvians fail at sums."] * 3
    assert [c[2]["split"] for c in calls] == ["validation", "test", "train"]
    assert calls[2][2]["data_files"] == [trust.STEREOTYPE_HUB_FILE]


def test_hub_split_without_a_column_names_the_hub_id(monkeypatch: pytest.MonkeyPatch) -> None:
    renamed = {"question": ["Q?"], "best": ["Yes"], "incorrect_answers": [["No"]]}
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: Dataset.from_dict(renamed))
    with pytest.raises(data.DataError, match=(
            f"^{trust.TRUTHFULQA_HUB_ID} has no column 'best_answer' "
            r"\(found: question, best, incorrect_answers\)")):
        data.load_trust("truthfulness")


# damaged files

LOADERS: dict[str, Callable[..., object]] = {
    hh.HH_FILENAME: data.load_hh,
    trust.TRUTHFULQA_FILENAME: lambda folder, **kw: data.load_trust("truthfulness", folder, **kw),
    trust.ETHICS_FILENAME: lambda folder, **kw: data.load_trust("machine_ethics", folder, **kw),
    trust.STEREOTYPE_FILENAME: lambda folder, **kw: data.load_trust("stereotypical_bias", folder,
                                                                    **kw),
}
"""Mirror file -> ``(folder, verify=...)``: load the data that the file of that folder holds."""


def _edit_hh(path: Path, edit: Callable[[int, str], str]) -> None:
    """Rewrite each line of a gzipped JSON-lines file as ``edit(position, line)``."""
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        edited = [edit(position, line.rstrip("\n")) for position, line in enumerate(lines)]
    path.write_bytes(gzip.compress("".join(f"{line}\n" for line in edited).encode()))


def _edit_csv(path: Path, edit: Callable[[int, dict[str, str]], dict[str, str]]) -> None:
    """Rewrite each row of a CSV file as ``edit(position, row)``; the header follows row 0."""
    with path.open(newline="", encoding="utf-8") as lines:
        rows = [edit(position, row) for position, row in enumerate(csv.DictReader(lines))]
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _assert_one_sentence(err: data.DataError, path: Path) -> None:
    message = str(err)
    assert isinstance(err, ValueError)  # so the command line prints it as one line
    assert str(path) in message and "\n" not in message
    assert message.endswith(f"replace it with {path.name} from the offline data mirror "
                            "(see the shared data README)")


def test_hh_with_every_second_line_truncated_fails_with_the_counts(tmp_path: Path) -> None:
    folder = data.write_fixture_data(tmp_path)
    path = folder / hh.HH_FILENAME
    _edit_hh(path, lambda at, line: line[: len(line) // 2] if at % 2 else line)
    with pytest.raises(data.DataError) as caught:
        data.load_hh(folder, verify=False)
    _assert_one_sentence(caught.value, path)
    assert "60 of 120 rows are unusable (unparseable JSON line: 60), more than the 5%" in str(
        caught.value)


def test_a_few_unusable_hh_lines_warn_with_the_count_per_reason(tmp_path: Path) -> None:
    folder = data.write_fixture_data(tmp_path)
    path = folder / hh.HH_FILENAME
    broken = {10: lambda line: line[:-20], 20: lambda line: json.dumps({"rejected": "x"}),
              30: lambda line: json.dumps({"chosen": "\n\nHuman: Anyone there?"})}
    _edit_hh(path, lambda at, line: broken[at](line) if at in broken else line)
    with pytest.warns(data.DataWarning) as caught:
        splits = data.load_hh(folder, verify=False)
    assert [str(w.message) for w in caught] == [
        f"{path}: dropped 4 of 120 rows as unusable (unparseable JSON line: 1, "
        "no 'chosen' transcript: 1, no assistant turn: 1, empty last assistant turn: 1)"]
    assert len(splits["train"]) + len(splits["test"]) == 120 - 4 - 1  # and one duplicate


@pytest.mark.parametrize("n_empty", [3, 20])
def test_empty_truthfulqa_answers_are_counted(tmp_path: Path, n_empty: int) -> None:
    """3 empty best answers and the fixture's question without incorrect answers are 4 % of
    100 rows, a warning; 20 and that one are 21 %, a damaged file."""
    folder = data.write_fixture_data(tmp_path, n_questions=100)
    path = folder / trust.TRUTHFULQA_FILENAME
    _edit_csv(path, lambda at, row: {**row, "Best Answer": ""} if 10 <= at < 10 + n_empty else row)
    counts = f"(empty best answer: {n_empty}, no incorrect answer: 1)"
    if n_empty == 3:
        with pytest.warns(data.DataWarning) as caught:
            assert len(data.load_trust("truthfulness", folder, verify=False)) == 96
        assert [str(w.message) for w in caught] == [
            f"{path}: dropped 4 of 100 rows as unusable {counts}"]
    else:
        with pytest.raises(data.DataError, match=r"21 of 100 rows are unusable") as caught:
            data.load_trust("truthfulness", folder, verify=False)
        _assert_one_sentence(caught.value, path)
        assert counts in str(caught.value)


@pytest.mark.parametrize("filename, column", [
    (trust.TRUTHFULQA_FILENAME, "Best Answer"),
    (trust.ETHICS_FILENAME, "label"),
    (trust.STEREOTYPE_FILENAME, "target_group"),
])
def test_missing_column_names_the_column_and_the_file(
    tmp_path: Path, filename: str, column: str
) -> None:
    folder = data.write_fixture_data(tmp_path)
    path = folder / filename
    _edit_csv(path, lambda at, row: {k: v for k, v in row.items() if k != column})
    with pytest.raises(data.DataError) as caught:
        LOADERS[filename](folder, verify=False)
    _assert_one_sentence(caught.value, path)
    assert f"has no column {column!r} (found: " in str(caught.value)


def _truncate(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


def _scramble_middle(raw: bytes) -> bytes:
    middle = len(raw) // 2
    return raw[:middle] + bytes(b ^ 0xFF for b in raw[middle:middle + 64]) + raw[middle + 64:]


@pytest.mark.parametrize("filename, damage, problem", [
    (hh.HH_FILENAME, _truncate, "is a truncated gzip file"),
    (hh.HH_FILENAME, gzip.decompress, "is not gzip-compressed although its name ends in .gz"),
    (hh.HH_FILENAME, _scramble_middle, "is a damaged gzip file"),
    (trust.TRUTHFULQA_FILENAME, lambda raw: raw.replace(b"Nothing", "Ñothing".encode("latin-1")),
     "is not UTF-8 text"),
    (trust.ETHICS_FILENAME, lambda raw: b"", "is empty"),
    (trust.STEREOTYPE_FILENAME, lambda raw: b"\n" + raw, "has no header row"),
], ids=["truncated-gzip", "plain-text-named-gz", "damaged-gzip", "latin-1", "empty", "no-header"])
def test_unreadable_file_fails_with_one_sentence(
    tmp_path: Path, filename: str, damage: Callable[[bytes], bytes], problem: str
) -> None:
    folder = data.write_fixture_data(tmp_path)
    path = folder / filename
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(data.DataError, match=problem) as caught:
        LOADERS[filename](folder, verify=False)
    _assert_one_sentence(caught.value, path)


def test_bad_ethics_labels_are_counted_drops(tmp_path: Path) -> None:
    """A label other than 0 or 1 is an unusable row, like any other: one warns, a file of them
    fails. The long scenarios the loader leaves out by design are not mentioned."""
    folder = data.write_fixture_data(tmp_path)
    path = folder / trust.ETHICS_FILENAME
    _edit_csv(path, lambda at, row: {**row, "label": "2"} if at == 5 else row)
    with pytest.warns(data.DataWarning) as caught:
        data.load_trust("machine_ethics", folder, verify=False)
    assert [str(w.message) for w in caught] == [
        f"{path}: dropped 1 of 80 rows as unusable (label not 0 or 1: 1)"]
    _edit_csv(path, lambda at, row: {**row, "label": ("right", "wrong")[at % 2]})
    with pytest.raises(data.DataError, match=r"80 of 80 rows .*\(label not 0 or 1: 80\)") as err:
        data.load_trust("machine_ethics", folder, verify=False)
    _assert_one_sentence(err.value, path)


def test_empty_target_group_and_cut_off_row_are_counted(tmp_path: Path) -> None:
    folder = data.write_fixture_data(tmp_path)
    path = folder / trust.STEREOTYPE_FILENAME
    _edit_csv(path, lambda at, row: {**row, "target_group": " "} if at == 3 else row)
    with pytest.warns(data.DataWarning) as caught:
        assert len(data.load_trust("stereotypical_bias", folder, verify=False)) == (24 - 1) * 3
    assert [str(w.message) for w in caught] == [
        f"{path}: dropped 1 of 24 rows as unusable (empty target group: 1)"]
    path = folder / trust.ETHICS_FILENAME
    cut_off = path.read_text(encoding="utf-8").rstrip().rsplit(",", 2)[0]  # no is_short, edited
    path.write_text(cut_off, encoding="utf-8")
    with pytest.warns(data.DataWarning) as caught:
        data.load_trust("machine_ethics", folder, verify=False)
    assert [str(w.message) for w in caught] == [
        f"{path}: dropped 1 of 80 rows as unusable (fewer fields than the header: 1)"]


# published copies

def _publish(monkeypatch: pytest.MonkeyPatch, path: Path, rows: int, usable_rows: int) -> None:
    """Make ``path``, as it is now, the published file of its name for this test."""
    monkeypatch.setitem(data.PUBLISHED, path.name, PublishedFile(
        path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest(), rows, usable_rows))


def _cut_mid_line(path: Path, fraction: float = 0.6) -> None:
    """Keep ``fraction`` of a CSV file's bytes, ending inside the line there, before the comma
    of its last field (``Source`` for TruthfulQA), as a copy interrupted mid-line ends."""
    raw = path.read_bytes()
    line_end = raw.index(b"\n", int(fraction * len(raw)))
    path.write_bytes(raw[: raw.rindex(b",", 0, line_end)])


def _halve_hh(path: Path) -> int:
    """Keep the first half of a gzipped JSON-lines file's lines and gzip it again, a valid
    gzip file; returns the lines kept."""
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").splitlines(keepends=True)
    kept = lines[: len(lines) // 2]
    path.write_bytes(gzip.compress("".join(kept).encode("utf-8")))
    return len(kept)


def test_a_csv_row_cut_before_a_column_the_loader_does_not_read_is_counted(
        tmp_path: Path) -> None:
    """The cut last row lacks only ``Source``, which no loader reads: it is unusable all the
    same, since the file it ends is not whole."""
    folder = data.write_fixture_data(tmp_path, n_questions=100)
    path = folder / trust.TRUTHFULQA_FILENAME
    _cut_mid_line(path)
    rows = len(_csv_rows(path))
    with pytest.warns(data.DataWarning) as caught:
        triples = data.load_trust("truthfulness", folder, verify=False)
    assert [str(w.message) for w in caught] == [
        f"{path}: dropped 2 of {rows} rows as unusable (fewer fields than the header: 1, "
        "no incorrect answer: 1)"]
    assert len(triples) == rows - 2


def test_a_file_that_is_not_the_published_copy_is_refused_unless_told(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = data.write_fixture_data(tmp_path, n_questions=100)
    path = folder / trust.TRUTHFULQA_FILENAME
    _publish(monkeypatch, path, rows=100, usable_rows=99)
    assert len(data.load_trust("truthfulness", folder)) == 99  # the published file reads
    _cut_mid_line(path)
    rows = len(_csv_rows(path))
    with pytest.raises(data.DataError) as caught:
        data.load_trust("truthfulness", folder)
    assert str(caught.value) == (
        f"{path} is not the published {path.name} (its SHA-256 differs): it holds {rows} rows, "
        f"{rows - 2} usable, where the published file holds 100, 99 usable: replace it with "
        f"{path.name} from the offline data mirror (see the shared data README), or set "
        "data.verify: false to read a deliberately modified copy")
    with pytest.warns(data.DataWarning, match="fewer fields than the header: 1"):
        assert len(data.load_trust("truthfulness", folder, verify=False)) == rows - 2


def test_hh_cut_in_half_and_gzipped_again_is_refused(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid gzip file whose every line parses: only the checksum shows the missing half."""
    folder = data.write_fixture_data(tmp_path)
    path = folder / hh.HH_FILENAME
    _publish(monkeypatch, path, rows=120, usable_rows=119)
    kept = _halve_hh(path)
    with pytest.raises(data.DataError, match=(
            rf"is not the published {re.escape(path.name)} \(its SHA-256 differs\): it holds "
            rf"{kept} rows, {kept} usable, where the published file holds 120, 119 usable")):
        data.load_hh(folder)
    assert len(data.load_hh(folder, verify=False)["train"]) > 0


def test_a_file_under_another_name_is_read_unchecked(tmp_path: Path) -> None:
    folder = data.write_fixture_data(tmp_path)
    own = tmp_path / "my-questions.csv"
    (folder / trust.TRUTHFULQA_FILENAME).rename(own)
    with pytest.warns(data.DataWarning, match="no incorrect answer: 1"):
        assert len(data.load_trust("truthfulness", own)) == 39
    assert data.provenance(own)["published"] is False
    with pytest.raises(data.DataError, match="is not the published"):
        data.load_trust("machine_ethics", folder)  # a fixture under the mirror's name


def test_data_verify_false_reads_a_modified_copy_and_the_run_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``data.verify: false`` in the params lets a run read a modified mirror file; ``validate
    --data`` and the run record name each input file and whether it is the published one."""
    folder = data.write_fixture_data(tmp_path / "mirror", n_questions=100)
    held_out = ("bbq-Age.jsonl.gz", "bbq-Religion.jsonl.gz", "moralchoice-low-ambiguity.csv")
    for name in (hh.HH_FILENAME, trust.ETHICS_FILENAME, trust.STEREOTYPE_FILENAME,
                 trust.ANTI_STEREOTYPE_FILENAME, *held_out):
        _publish(monkeypatch, folder / name, rows=0, usable_rows=0)
    _publish(monkeypatch, folder / trust.TRUTHFULQA_FILENAME, rows=100, usable_rows=99)
    _cut_mid_line(folder / trust.TRUTHFULQA_FILENAME)
    sources = {"data.fixtures": False, "data.hh.source": str(folder),
               "data.trust.source": str(folder)}
    with pytest.raises(data.DataError, match="data.verify: false"):
        RunData(smoke_params(tmp_path, **sources)).trust  # noqa: B018 (loads on access)
    params = smoke_params(tmp_path, **sources, **{"data.verify": False})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.DataWarning)
        files = {Path(f["file"]).name: f for f in RunData(params).provenance()}
    rows = len(_csv_rows(folder / trust.TRUTHFULQA_FILENAME))
    assert files[trust.TRUTHFULQA_FILENAME] == {
        "file": str(folder / trust.TRUTHFULQA_FILENAME),
        "size": (folder / trust.TRUTHFULQA_FILENAME).stat().st_size,
        "sha256": hashlib.sha256((folder / trust.TRUTHFULQA_FILENAME).read_bytes()).hexdigest(),
        "rows": rows, "usable_rows": rows - 2, "published": False}
    assert files[hh.HH_FILENAME]["published"] and files[hh.HH_FILENAME]["usable_rows"] == 119
    assert len(files) == 8, ("HH, three trust files, the authors' anti-stereotypes and the "
                             "held-out benchmarks' (smoke: heldout on)")
    assert files["moralchoice-low-ambiguity.csv"]["usable_rows"] == 24
    (tmp_path / "params.yaml").write_text(params.to_yaml())
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.DataWarning)
        assert cli.main(["validate", str(tmp_path / "params.yaml"), "--data"]) == 0
    out = capsys.readouterr().out
    assert f"{trust.TRUTHFULQA_FILENAME}: {rows} rows, {rows - 2} usable, sha256 " in out
    assert out.count("NOT the published file") == 1 and out.count(", the published file") == 7


def test_a_source_that_does_not_exist_names_its_params_field(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / hh.HH_FILENAME
    run_data = RunData(smoke_params(tmp_path, **{"data.hh.source": str(missing)}))
    with pytest.raises(data.DataNotFoundError) as caught:
        run_data.hh  # noqa: B018 (loads on access)
    message = str(caught.value)
    assert message.startswith(f"data.hh.source: {hh.HH_FILENAME} not found at {missing}, "
                              "where the source given points")
    assert "set TRUST_DATA_DIR" not in message


@pytest.mark.skipif(not (REAL_DATA / hh.HH_FILENAME).is_file(),
                    reason=f"offline data mirror not found at {REAL_DATA}")
def test_the_published_values_are_the_mirrors(tmp_path: Path) -> None:
    """Each entry is its mirror file; a loader gets the usable rows the entry states; and the
    damage that once passed in silence, on the real files, is refused."""
    for name, published in data.PUBLISHED.items():
        record = data.provenance(REAL_DATA / name)
        assert (record["size"], record["sha256"], record["published"]) == (
            published.size, published.sha256, True), name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.DataWarning)
        data.load_hh(REAL_DATA)
        for aspect in data.ASPECTS:
            data.load_trust(aspect, REAL_DATA)
    for name in (hh.HH_FILENAME, *(trust.TRUST_FILES[a][0] for a in data.ASPECTS),
                 trust.ANTI_STEREOTYPE_FILENAME):
        record = data.provenance(REAL_DATA / name)
        assert (record["rows"], record["usable_rows"]) == (
            data.PUBLISHED[name].rows, data.PUBLISHED[name].usable_rows), name
    for name in (hh.HH_FILENAME, trust.TRUTHFULQA_FILENAME):
        (tmp_path / name).write_bytes((REAL_DATA / name).read_bytes())
    _cut_mid_line(tmp_path / trust.TRUTHFULQA_FILENAME)
    with pytest.raises(data.DataError, match=r"where the published file holds 817, 817 usable"):
        data.load_trust("truthfulness", tmp_path)
    kept = _halve_hh(tmp_path / hh.HH_FILENAME)
    with pytest.raises(data.DataError, match=(
            rf"holds {kept:,} rows, .* where the published file holds 2,312, 2,308 usable")):
        data.load_hh(tmp_path)


# real files

@pytest.fixture(scope="module")
def real_trust() -> dict[str, Dataset]:
    return {loading: data.load_trust(aspect, REAL_DATA, **options)
            for loading, (aspect, options) in LOADINGS.items()}


def _real_csv(name: str) -> list[dict[str, str]]:
    return _csv_rows(REAL_DATA / name)


@needs_real_data
def test_real_anti_stereotypes_share_no_word_with_their_topic() -> None:
    """An anti-stereotype says the opposite in words of its own: after the group slot and stop
    words, none of its words is in any stereotype template of its topic."""
    templates: dict[str, set[str]] = {}
    for row in _real_csv(trust.STEREOTYPE_FILENAME):
        templates.setdefault(row["stereotype_topic"], set()).add(row["stereotype_template"])
    assert set(templates) == set(data.ANTI_STEREOTYPES)
    assert {len(three) for three in templates.values()} == {3}
    for topic, three in data.ANTI_STEREOTYPES.items():
        stereotype_words = {w for template in templates[topic] for w in _words(template)}
        for sentence in three:
            shared = set(_words(sentence)) - STOP_WORDS & stereotype_words
            assert not shared, (topic, sentence, shared)


@needs_real_data
def test_real_trust_row_counts(real_trust: dict[str, Dataset]) -> None:
    bias_rows = _real_csv(trust.STEREOTYPE_FILENAME)
    assert len(bias_rows) == 16 * 3 * 24
    authors = data.load_anti_stereotypes(REAL_DATA)
    assert set(authors) == set(data.ANTI_STEREOTYPES) and {len(a) for a in authors.values()} == {3}
    for loading, proponents in (("stereotypical_bias", authors),
                                ("stereotypical_bias-template", authors),
                                ("stereotypical_bias-own", data.ANTI_STEREOTYPES)):
        assert len(real_trust[loading]) == 16 * 3 * 24 * 3 == 3456
        _assert_anti_stereotype_pairing(real_trust[loading], bias_rows, proponents)
    assert real_trust["stereotypical_bias"]["group"] == real_trust["stereotypical_bias-own"][
        "group"], "the same units, so the same split, whichever proponents"
    assert len(set(real_trust["stereotypical_bias"]["group"])) == 16 * 24  # topic x group
    assert len(set(real_trust["stereotypical_bias"]["stratum"])) == 24
    assert len(set(real_trust["stereotypical_bias-template"]["group"])) == 48
    questions = _real_csv(trust.TRUTHFULQA_FILENAME)
    with_incorrect = [q for q in questions if q["Incorrect Answers"].strip(" ;")]
    assert len(real_trust["truthfulness"]) == len(with_incorrect) <= 817
    ethics_rows = _real_csv(trust.ETHICS_FILENAME)
    _assert_minimal_pairs(real_trust["machine_ethics"], ethics_rows)
    short = [r["label"] for r in ethics_rows if r["is_short"] == "True"]
    assert len(real_trust["machine_ethics-random"]) == min(short.count("0"), short.count("1"))


@needs_real_data
@pytest.mark.parametrize("loading", LOADINGS)
def test_real_trust_triples_and_split(real_trust: dict[str, Dataset], loading: str) -> None:
    ds = real_trust[loading]
    _assert_valid_triples(ds)
    splits = data.split_trust(ds, test_fraction=0.2, seed=0)
    _assert_grouped_split(ds, splits, 0.2)
    assert 0.15 < len(splits["test"]) / len(ds) < 0.25
    validation = data.split_trust(splits["train"], test_fraction=0.2, seed=0)
    _assert_grouped_split(splits["train"], validation, 0.2)


@needs_real_data
def test_real_bias_group_split_tests_a_fifth_of_every_group(real_trust: dict[str, Dataset]
                                                            ) -> None:
    """The paper's split: about 20 % of each target group's topics in test, every group on
    both sides, a topic's nine triples for a group always together, so that no statement and
    no anti-stereotype sentence is scored on both sides."""
    ds = real_trust["stereotypical_bias"]
    splits = data.split_trust(ds, test_fraction=0.2, seed=0)
    assert abs(len(splits["test"]) - 0.2 * len(ds)) <= 9
    tested = Counter(splits["test"]["stratum"])
    assert len(tested) == len(set(splits["train"]["stratum"])) == 24
    assert set(tested.values()) <= {27, 36}  # 3 or 4 of a group's 16 topics, 9 triples each
    for side in splits.values():
        assert set(Counter(side["group"]).values()) == {9}
    for column in ("opponent", "proponent"):
        assert not set(splits["train"][column]) & set(splits["test"][column]), column


@needs_real_data
def test_real_bias_template_split_keeps_templates_whole(real_trust: dict[str, Dataset]) -> None:
    ds = real_trust["stereotypical_bias-template"]
    splits = data.split_trust(ds, test_fraction=0.2, seed=0)
    for side in splits.values():
        assert set(Counter(side["group"]).values()) == {24 * 3}
    assert len(set(splits["test"]["group"])) == 10


@needs_real_data
def test_real_hh_split_has_no_leakage() -> None:
    splits = data.load_hh(REAL_DATA, test_fraction=0.1, seed=0)
    n = len(splits["train"]) + len(splits["test"])
    assert 2300 <= n <= 2312
    assert len(splits["test"]) == round(0.1 * n)
    pairs = {name: set(zip(s["prompt"], s["response"], strict=True)) for name, s in splits.items()}
    assert not pairs["train"] & pairs["test"]
    assert not set(splits["train"]["id"]) & set(splits["test"]["id"])


def test_real_mirror_drops_only_the_known_empty_dialogues(monkeypatch: pytest.MonkeyPatch,
                                                         capsys) -> None:
    """Through ``$TRUST_DATA_DIR`` as a run finds it: no file warns, and the HH loader says
    that it left out the four transcripts that end in an empty assistant turn."""
    if not AMBIENT_DATA_DIR:
        pytest.skip(f"{DATA_DIR_ENV} is not set, so there is no offline data mirror to load")
    if not Path(AMBIENT_DATA_DIR).is_dir():
        pytest.skip(f"{DATA_DIR_ENV}={AMBIENT_DATA_DIR} is not a folder")
    monkeypatch.setenv(DATA_DIR_ENV, AMBIENT_DATA_DIR)
    with warnings.catch_warnings():
        warnings.simplefilter("error", data.DataWarning)
        assert [len(data.load_trust(aspect)) for aspect in data.ASPECTS] == [817, 831, 3456]
        assert [ASPECT_TABLE[aspect].triples for aspect in data.ASPECTS] == [817, 831, 3456]
        capsys.readouterr()
        splits = data.load_hh()
    assert capsys.readouterr().out == (
        f"{Path(AMBIENT_DATA_DIR) / hh.HH_FILENAME}: dropped 4 of 2,312 rows as unusable "
        "(empty last assistant turn: 4)\n")
    assert len(splits["train"]) + len(splits["test"]) == 2308


def test_real_minimal_pair_count() -> None:
    """The ETHICS mirror, found through ``$TRUST_DATA_DIR``, holds 831 adjacent minimal pairs."""
    if not AMBIENT_DATA_DIR:
        pytest.skip(f"{DATA_DIR_ENV} is not set, so there is no offline data mirror to count in")
    ds = data.load_trust("machine_ethics", AMBIENT_DATA_DIR)
    assert len(ds) == 831
    _assert_minimal_pairs(ds, _csv_rows(Path(AMBIENT_DATA_DIR) / trust.ETHICS_FILENAME))
