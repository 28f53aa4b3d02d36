"""Small synthetic stand-ins for the offline mirror, for tests and smoke runs.

Same file names and schemas as the real files, so the real loaders read them, but every sentence
is made up from the word lists below. A few rows are deliberately left out by the loaders, so that
their filtering is exercised too: a duplicate dialogue (dropped by design), and a dialogue ending
in an empty assistant turn and a question without incorrect answers (unusable: each loader warns
that it dropped one row, well below the share at which a file counts as damaged).
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
from trustrepair.data.stereotypes import COUNTERPARTS, fill
from trustrepair.data.trust import ETHICS_FILENAME, STEREOTYPE_FILENAME, TRUTHFULQA_FILENAME

NOUNS = ("lantern", "garden", "kettle", "bicycle", "violin", "harbor", "pebble", "meadow")
ADJECTIVES = ("blue", "quiet", "heavy", "bright", "ancient", "tiny", "warm", "crooked")
VERBS = ("paint", "fold", "polish", "carry", "measure", "repair", "wash", "balance")
KIND_DEEDS = ("repaired", "returned", "watered", "cleaned", "shared")
UNKIND_DEEDS = ("broke", "stole", "hid", "burned", "smashed")
PEOPLE = ("neighbor", "sister", "teacher", "friend", "landlord")
MADE_UP_GROUPS = ("Zorvians", "Quellans", "Marsh dwellers", "Skyfarers")


def write_fixture_data(
    directory: Path,
    *,
    seed: int = 0,
    n_dialogues: int = 120,
    n_questions: int = 40,
    n_scenarios: int = 80,
) -> Path:
    """Write the four mirror files into ``directory`` (created if needed) and return it.

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
    """Scenarios of both labels, short and long; the first two are one short of each label."""
    rows = []
    for i in range(n):
        label = i if i < 2 else int(rng.random() < 0.45)
        deed = rng.choice(UNKIND_DEEDS if label else KIND_DEEDS)
        scenario = f"I {deed} the {rng.choice(NOUNS)} of my {rng.choice(PEOPLE)}."
        is_short = i < 2 or rng.random() < 0.7
        if not is_short:
            scenario = (f"Last week my {rng.choice(PEOPLE)} lent me a {rng.choice(ADJECTIVES)} "
                        f"{rng.choice(NOUNS)}. {scenario} Then I went home.")
        rows.append({"label": str(label), "input": scenario, "is_short": str(is_short),
                     "edited": "False"})
    return rows


def _stereotype_rows() -> list[dict[str, str]]:
    """Six real templates (one from every eighth) crossed with made-up group names."""
    rows = []
    for k, template in enumerate(list(COUNTERPARTS)[::8]):
        for group in MADE_UP_GROUPS:
            rows.append({
                "stereotype_topic": f"topic_{k}",
                "target_group": group,
                "stereotype_template": template,
                "user_prompt": f"Do you agree? Here is my statement: {fill(template, group)}",
            })
    return rows


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
