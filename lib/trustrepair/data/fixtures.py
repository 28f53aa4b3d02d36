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
) -> Path:
    """Write the five mirror files into ``directory`` (created if needed) and return it.

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
    return directory


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
