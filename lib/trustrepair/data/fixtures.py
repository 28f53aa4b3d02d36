"""Small synthetic stand-ins for the offline mirror, for tests and smoke runs.

Same file names and schemas as the real files, so the real loaders read them, but every sentence
is made up from the word lists below. A few rows are deliberately left out by the loaders, so that
their filtering is exercised too: a duplicate dialogue (dropped by design), and a dialogue ending
in an empty assistant turn and a question without incorrect answers (unusable: each loader warns
that it dropped one row, well below the share at which a file counts as damaged). The layout
(which rows pair, how many there are) is the same for every seed; the seed picks the words.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import random
from pathlib import Path

from trustrepair.data.heldout import MORALCHOICE_FILENAME, bbq_filename
from trustrepair.data.hh import HH_FILENAME
from trustrepair.data.stereotypes import fill
from trustrepair.data.trust import (
    ANTI_STEREOTYPE_FILENAME,
    ETHICS_FILENAME,
    STEREOTYPE_FILENAME,
    TRUTHFULQA_FILENAME,
)

NOUNS = ("lantern", "garden", "kettle", "bicycle", "violin", "harbor", "pebble", "meadow")
ADJECTIVES = ("blue", "quiet", "heavy", "bright", "ancient", "tiny", "warm", "crooked")
VERBS = ("paint", "fold", "polish", "carry", "measure", "repair", "wash", "balance")
KIND_DEEDS = ("repaired", "returned", "watered", "cleaned", "shared")
UNKIND_DEEDS = ("broke", "stole", "hid", "burned", "smashed")
PEOPLE = ("neighbor", "sister", "teacher", "friend", "landlord")
MADE_UP_GROUPS = ("Zorvians", "Quellans", "Marsh dwellers", "Skyfarers")
STEREOTYPE_TOPICS = ("driving", "hygiene")
"""Two of DecodingTrust's topics, so that the loader finds their anti-stereotypes (the
package's own, and the fixture stand-in for the authors' file)."""
BBQ_GROUPS = {"Age": (("grandfather", "old"), ("grandson", "nonOld")),
              "Religion": (("Zorvian", "Zorvian"), ("Quellan", "Quellan"))}
"""Two of the mirror's BBQ categories, each with two groups as ``answer_info`` names and
labels them; the first is the stereotyped one."""
BBQ_UNKNOWNS = ("Can't be determined", "Unknown", "Not enough information")
ETHICS_LAYOUT = ("pair", "pair", "long", "pair", "unrelated")
"""Repeated until the file is full: an adjacent minimal pair (2 rows), a long scenario, or two
adjacent short rows of opposite labels that share too few words to pair."""


def write_fixture_data(
    directory: Path,
    *,
    seed: int = 0,
    n_dialogues: int = 120,
    n_questions: int = 40,
    n_scenarios: int = 80,
    n_templates: int = 4,
    n_choices: int = 24,
) -> Path:
    """Write the mirror files into ``directory`` (created if needed) and return it: the
    five the trust pipeline reads, and the held-out benchmarks (BBQ's ``BBQ_GROUPS``
    categories with ``n_templates`` question templates each, ``n_choices`` MoralChoice
    scenarios).

    Deterministic for a seed; each file is written under a temporary name and then renamed, so
    a reader never sees half a file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    _write_atomic(directory / HH_FILENAME, _gzip(_hh_lines(rng, n_dialogues)))
    _write_atomic(directory / TRUTHFULQA_FILENAME, _csv(_truthfulqa_rows(rng, n_questions)))
    _write_atomic(directory / ETHICS_FILENAME, _csv(_ethics_rows(rng, n_scenarios)))
    _write_atomic(directory / STEREOTYPE_FILENAME, _csv(_stereotype_rows()))
    _write_atomic(directory / ANTI_STEREOTYPE_FILENAME, _csv(_anti_stereotype_rows()))
    for category, groups in BBQ_GROUPS.items():
        _write_atomic(directory / bbq_filename(category),
                      _gzip(_bbq_lines(rng, category, groups, n_templates)))
    _write_atomic(directory / MORALCHOICE_FILENAME, _csv(_moralchoice_rows(rng, n_choices)))
    return directory


def _bbq_lines(rng: random.Random, category: str, groups: tuple[tuple[str, str], ...],
               n_templates: int) -> str:
    """Per template, both group orders × ambiguous / disambiguated context × negative /
    non-negative question, as BBQ lays them out; the first Age line has no unknown answer."""
    lines, example = [], 0
    for template in range(1, n_templates + 1):
        noun, adj = rng.choice(NOUNS), rng.choice(ADJECTIVES)
        unknown_text = rng.choice(BBQ_UNKNOWNS)
        for first, second in (groups, groups[::-1]):
            for condition in ("ambig", "disambig"):
                context = f"A {first[0]} and a {second[0]} looked at a {adj} {noun}."
                if condition == "disambig":
                    context += f" The {first[0]} dropped it and the {second[0]} caught it."
                for polarity in ("neg", "nonneg"):
                    question = (f"Who dropped the {noun}?" if polarity == "neg"
                                else f"Who caught the {noun}?")
                    order = [first, second, (unknown_text, "unknown")]
                    rng.shuffle(order)
                    answer = ("unknown" if condition == "ambig" else
                               first[1] if polarity == "neg" else second[1])
                    label = next(k for k, (_, group) in enumerate(order) if group == answer)
                    info = {f"ans{k}": [name, group] for k, (name, group) in enumerate(order)}
                    if example == 0 and category == "Age":
                        info = {k: [name, "old"] for k, (name, _) in info.items()}
                    lines.append({
                        "example_id": example, "question_index": str(template),
                        "question_polarity": polarity, "context_condition": condition,
                        "category": category, "answer_info": info,
                        "additional_metadata": {"subcategory": "None",
                                                "stereotyped_groups": [groups[0][1]],
                                                "version": "a", "source": "fixture"},
                        "context": context, "question": question,
                        **{f"ans{k}": (name if group == "unknown" else f"The {name}")
                           for k, (name, group) in enumerate(order)},
                        "label": label})
                    example += 1
    return "".join(json.dumps(line) + "\n" for line in lines)


def _moralchoice_rows(rng: random.Random, n: int) -> list[dict[str, str]]:
    """Scenarios with a kind (rule-following) and an unkind (rule-breaking) action."""
    rows = []
    for i in range(n):
        noun, person = rng.choice(NOUNS), rng.choice(PEOPLE)
        rows.append({
            "scenario_id": f"F_{i:03d}", "ambiguity": "low", "generation_type": "Fixture",
            "generation_rule": "Do not deceive",
            "context": f"You hold the {rng.choice(ADJECTIVES)} {noun} of your {person}.",
            "action1": f"I {rng.choice(KIND_DEEDS)} the {noun}.",
            "action2": f"I {rng.choice(UNKIND_DEEDS)} the {noun}."})
    return rows


def _hh_lines(rng: random.Random, n: int) -> str:
    """Multi-turn dialogues; the last two repeat the first and end with an empty turn."""
    dialogues = []
    for i in range(max(n - 2, 1)):
        turns = []
        for turn in range(rng.randint(1, 3)):
            count = f"{i + 2} " if turn == 0 else ""
            noun, adj, verb = rng.choice(NOUNS), rng.choice(ADJECTIVES), rng.choice(VERBS)
            turns.append(f"\n\nHuman: How do I {verb} {count}{adj} {noun}s?")
            turns.append(f"\n\nAssistant: You can {verb} a {noun} with a {rng.choice(NOUNS)}.")
        chosen = "".join(turns)
        rejected = chosen[: chosen.rfind(" You can")] + " I would rather not say."
        dialogues.append({"chosen": chosen, "rejected": rejected})
    if n >= 3:
        dialogues.append(dialogues[0])
        empty_end = dialogues[1]["chosen"][: dialogues[1]["chosen"].rfind(" You can")]
        dialogues.append({"chosen": empty_end, "rejected": empty_end})
    return "".join(json.dumps(d) + "\n" for d in dialogues)


def _truthfulqa_rows(rng: random.Random, n: int) -> list[dict[str, str]]:
    """Questions with ';'-separated answers; the second has no incorrect answer."""
    rows = []
    for i in range(n):
        noun, adj, verb = rng.choice(NOUNS), rng.choice(ADJECTIVES), rng.choice(VERBS)
        wrong = [f"The {noun} turns {a}" for a in rng.sample(ADJECTIVES, rng.randint(1, 3))]
        rows.append({
            "Type": rng.choice(("Adversarial", "Non-Adversarial")),
            "Category": rng.choice(("Misconceptions", "Fiction", "Weather")),
            "Question": f"What happens if you {verb} a {adj} {noun} on day {i + 1}?",
            "Best Answer": f"Nothing in particular happens to the {noun}",
            "Correct Answers": f"Nothing in particular happens to the {noun}; It stays {adj}; ",
            "Incorrect Answers": "" if i == 1 else "; ".join(wrong),
            "Source": f"https://example.org/fixture/{i}",
        })
    return rows


def _ethics_rows(rng: random.Random, n: int) -> list[dict[str, str]]:
    """Short and long scenarios of both labels laid out as ``ETHICS_LAYOUT``, cut at ``n`` rows.

    A minimal pair differs in the deed only and puts either label first; a long scenario's
    label alternates, so both labels occur among short and long rows.
    """
    rows: list[tuple[int, str, bool]] = []
    block = 0
    while len(rows) < n:
        kind = ETHICS_LAYOUT[block % len(ETHICS_LAYOUT)]
        noun, person = rng.choice(NOUNS), rng.choice(PEOPLE)
        if kind == "pair":
            pair = [(label, f"I {rng.choice(deeds)} the {noun} of my {person}.", True)
                    for label, deeds in ((0, KIND_DEEDS), (1, UNKIND_DEEDS))]
            rows.extend(pair if rng.random() < 0.5 else pair[::-1])
        elif kind == "long":
            label = block // len(ETHICS_LAYOUT) % 2
            deed = rng.choice(UNKIND_DEEDS if label else KIND_DEEDS)
            rows.append((label, f"Last week my {person} lent me a {rng.choice(ADJECTIVES)} "
                                f"{noun}. I {deed} the {noun} of my {person}. Then I went home.",
                         False))
        else:
            rows.append((0, f"I {rng.choice(KIND_DEEDS)} the {noun} of my {person}.", True))
            rows.append((1, f"Yesterday we saw a {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} "
                            "at dawn.", True))
        block += 1
    return [{"label": str(label), "input": scenario, "is_short": str(is_short), "edited": "False"}
            for label, scenario, is_short in rows[:n]]


def _stereotype_rows() -> list[dict[str, str]]:
    """Three made-up templates for each of ``STEREOTYPE_TOPICS``, crossed with made-up groups:
    24 rows, so that one unusable row warns rather than fails."""
    rows = []
    for k, topic in enumerate(STEREOTYPE_TOPICS):
        for verb in VERBS[3 * k:3 * k + 3]:
            template = f"[target_group] {verb} every {NOUNS[k]} badly."
            for group in MADE_UP_GROUPS:
                rows.append({
                    "stereotype_topic": topic,
                    "target_group": group,
                    "stereotype_template": template,
                    "user_prompt": f"Do you agree? Here is my statement: {fill(template, group)}",
                })
    return rows


def _anti_stereotype_rows() -> list[dict[str, str]]:
    """Three made-up anti-stereotypes for each of ``STEREOTYPE_TOPICS``, in the schema of the
    authors' file: each undoes one of the topic's stereotype templates."""
    return [{"stereotype_topic": topic,
             "antistereotype_template": f"[target_group] {verb} every {NOUNS[k]} with care."}
            for k, topic in enumerate(STEREOTYPE_TOPICS) for verb in VERBS[3 * k:3 * k + 3]]


def _csv(rows: list[dict[str, str]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def _gzip(text: str) -> bytes:
    """Gzip with a zero timestamp, so the same seed gives the same bytes."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as out:
        out.write(text.encode("utf-8"))
    return buffer.getvalue()


def _write_atomic(path: Path, payload: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(payload)
    os.replace(partial, path)
