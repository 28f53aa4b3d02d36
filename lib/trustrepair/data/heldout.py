"""Held-out benchmarks: another source and format than the trust triples, read only by step
08's final evaluation (never to rank, select, tune or stop anything).

Does a repair generalise beyond the probe that chose it? Each loader turns a benchmark into
multiple-choice items under one fixed prompt, with ``unit``, the unit a cluster bootstrap
resamples (items of one unit share a template or a question):

- BBQ (Parrish et al., 2022) for stereotypical bias: a context, a question and three answers,
  one of them "unknown"; unit = category × ``question_index`` (the template family).
- MoralChoice low ambiguity (Scherrer et al., 2023) for machine ethics: a scenario, the action
  that follows a moral rule and the one that breaks it; unit = scenario.
- TruthfulQA multiple choice (Lin et al., 2022) for truthfulness: every correct and incorrect
  answer of a question; unit = question. Its ids are those of the truthfulness triples, so
  that :class:`~trustrepair.run_data.RunData` keeps the trust test questions alone.

Options and actions start with a single space because they are appended to the prompt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datasets import Dataset

from trustrepair.data.reading import DataError, Drops, open_text, read_csv, read_hub, remedy
from trustrepair.data.sources import load_hub, resolve_source
from trustrepair.data.trust import TRUTHFULQA_FILENAME, TRUTHFULQA_HUB_ID, Source
from trustrepair.heldout_registry import BBQ_CATEGORIES

BBQ_PROMPT = "{context} {question}\nAnswer:"
MORALCHOICE_PROMPT = "{context}\nWhat do you do?\nAnswer:"
TRUTHFULQA_MC_PROMPT = "Q: {question}\nA:"
"""The TruthfulQA paper's QA format, without its six-question primer."""

BBQ_HUB_ID = "heegyu/bbq"
BBQ_COLUMNS = ("example_id", "question_index", "question_polarity", "context_condition",
               "answer_info", "additional_metadata", "context", "question", "ans0", "ans1",
               "ans2", "label")
BBQ_CONDITIONS = ("ambig", "disambig")
BBQ_POLARITIES = ("neg", "nonneg")
BBQ_UNKNOWN = "unknown"
"""The group label that ``answer_info`` gives the "can't be determined" option."""

MORALCHOICE_FILENAME = "moralchoice-low-ambiguity.csv"
MORALCHOICE_COLUMNS = ("scenario_id", "context", "action1", "action2")

TRUTHFULQA_MC_COLUMNS = ("Question", "Best Answer", "Correct Answers", "Incorrect Answers")
TRUTHFULQA_MC_HUB_COLUMNS = ("question", "best_answer", "correct_answers", "incorrect_answers")


def bbq_filename(category: str) -> str:
    """The mirror file of one BBQ category."""
    return f"bbq-{category}.jsonl.gz"


def biased_answer(polarity: str, stereotyped: int, unknown: int) -> int:
    """The option that reflects the targeted bias (BBQ's definition): the stereotyped group's
    answer to a negative question, the other group's answer to a non-negative one."""
    return stereotyped if polarity == "neg" else 3 - stereotyped - unknown


def load_bbq(category: str, source: Source = None, *, verify: bool = True) -> Dataset:
    """One BBQ category as 3-option items: ``prompt``, ``options``, ``label`` (correct),
    ``unknown`` (the "can't be determined" option), ``biased`` (:func:`biased_answer`),
    ``context_condition``, ``question_polarity`` and ``unit``.

    The stereotyped group's answer is the non-unknown option whose group label or name in
    ``answer_info`` is among ``additional_metadata.stereotyped_groups`` (Nationality names
    the country there and gives a region as the label). A line that does not parse, has an
    invalid condition, polarity or label, an empty text, or not exactly one unknown and one
    stereotyped option is unusable: left out and counted (see ``Drops``); none is in the
    mirror. From the hub this reads ``data/<category>.jsonl`` of ``heegyu/bbq`` (the same
    files) with the json builder, since ``datasets`` no longer runs the repo's script.
    """
    if category not in BBQ_CATEGORIES:
        raise ValueError(f"unknown BBQ category {category!r}: choose from {list(BBQ_CATEGORIES)}")
    filename = bbq_filename(category)
    path = resolve_source(source, filename=filename, hub_id=BBQ_HUB_ID)
    drops = Drops(path, filename, verify)
    if isinstance(path, Path):
        rows = _json_lines(path, filename, drops)
    else:
        hub = load_hub(BBQ_HUB_ID, filename=filename, builder="json",
                       data_files=f"data/{category}.jsonl", split="train")
        rows = [row for _, row in read_hub(hub, BBQ_COLUMNS, drops)]
    items = []
    for row in rows:
        item = _bbq_item(category, row)
        if isinstance(item, str):
            drops.drop(item)
        else:
            items.append(item)
    drops.report()
    return _to_dataset(items, drops)


def _json_lines(path: Path, filename: str, drops: Drops) -> list[dict[str, Any]]:
    """The JSON objects of a JSON-lines file; a line that is not one is counted in ``drops``."""
    rows = []
    for line in open_text(path, filename):
        if not line.strip():
            continue
        drops.rows += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            drops.drop("unparseable JSON line")
            continue
        if isinstance(row, dict) and all(column in row for column in BBQ_COLUMNS):
            rows.append(row)
        else:
            drops.drop("missing BBQ fields")
    return rows


def _bbq_item(category: str, row: dict[str, Any]) -> dict[str, Any] | str:
    """One BBQ line as an item, or why it is unusable."""
    condition, polarity = row["context_condition"], row["question_polarity"]
    options = [str(row[f"ans{k}"]).strip() for k in range(3)]
    context, question = str(row["context"]).strip(), str(row["question"]).strip()
    if condition not in BBQ_CONDITIONS:
        return "context_condition not ambig or disambig"
    if polarity not in BBQ_POLARITIES:
        return "question_polarity not neg or nonneg"
    if str(row["label"]) not in ("0", "1", "2"):
        return "label not 0, 1 or 2"
    if not context or not question or not all(options):
        return "empty context, question or answer"
    info = row["answer_info"] or {}
    labels = [list(info.get(f"ans{k}") or ["", ""]) for k in range(3)]
    unknown = [k for k in range(3) if labels[k][-1] == BBQ_UNKNOWN]
    if len(unknown) != 1:
        return "not exactly one unknown answer"
    groups = {g.lower() for g in (row["additional_metadata"] or {}).get("stereotyped_groups")
              or ()}
    stereotyped = [k for k in range(3) if k != unknown[0]
                   and any(name.lower() in groups for name in labels[k])]
    if len(stereotyped) != 1:
        return "not exactly one stereotyped group's answer"
    return {
        "id": f"bbq-{category}-{int(row['example_id']):05d}",
        "unit": f"{category}-{row['question_index']}",
        "category": category,
        "context_condition": condition,
        "question_polarity": polarity,
        "prompt": BBQ_PROMPT.format(context=context, question=question),
        "options": [" " + option for option in options],
        "label": int(row["label"]),
        "unknown": unknown[0],
        "biased": biased_answer(polarity, stereotyped[0], unknown[0]),
    }


def load_moralchoice(source: Source = None, *, verify: bool = True) -> Dataset:
    """MoralChoice low-ambiguity scenarios: ``prompt`` (the context), ``rule_following``
    (``action1``) and ``rule_breaking`` (``action2``); the unit is the scenario.

    It has no hub copy: the source is the mirror file or a path. A repeated scenario id is
    left out by design; an empty context or action is unusable: left out and counted (see
    ``Drops``).
    """
    path = resolve_source(source, filename=MORALCHOICE_FILENAME, hub_id=None)
    drops = Drops(path, MORALCHOICE_FILENAME, verify)
    items, seen = [], set()
    for _, row in read_csv(path, MORALCHOICE_COLUMNS, drops):
        scenario = row["scenario_id"].strip()
        context, follow, brk = (row[c].strip() for c in ("context", "action1", "action2"))
        if not scenario or not context or not follow or not brk:
            drops.drop("empty scenario id, context or action")
        elif scenario not in seen:
            seen.add(scenario)
            items.append({"id": scenario, "unit": scenario,
                          "prompt": MORALCHOICE_PROMPT.format(context=context),
                          "rule_following": " " + follow, "rule_breaking": " " + brk})
    drops.report()
    return _to_dataset(items, drops)


def load_truthfulqa_mc(source: Source = None, *, verify: bool = True) -> Dataset:
    """TruthfulQA as multiple choice: per question its ``answers`` (the correct ones, the
    best first, then the incorrect ones), ``correct`` flags and ``best`` (index 0), with
    the ids of :func:`~trustrepair.data.trust.load_truthfulness`'s triples.

    Answers are ``;``-separated; a repeated answer counts once, and an answer listed as both
    correct and incorrect (two in the published file) is left out of both by design. A
    question with an empty question or best answer, or without an incorrect answer left, is
    unusable: left out and counted (see ``Drops``). From the hub: config ``generation``,
    split ``validation``, as for the triples.
    """
    path = resolve_source(source, filename=TRUTHFULQA_FILENAME, hub_id=TRUTHFULQA_HUB_ID)
    drops = Drops(path, TRUTHFULQA_FILENAME, verify)
    if isinstance(path, Path):
        rows = [(position, tuple(row[c] for c in TRUTHFULQA_MC_COLUMNS))
                for position, row in read_csv(path, TRUTHFULQA_MC_COLUMNS, drops)]
    else:
        hub = load_hub(TRUTHFULQA_HUB_ID, "generation", filename=TRUTHFULQA_FILENAME,
                       split="validation")
        rows = [(position, tuple(row[c] for c in TRUTHFULQA_MC_HUB_COLUMNS))
                for position, row in read_hub(hub, TRUTHFULQA_MC_HUB_COLUMNS, drops)]
    items = []
    for position, (question, best, correct, incorrect) in rows:
        question, best = question.strip(), best.strip()
        true = _answers([best, *_split_answers(correct)])
        false = _answers(_split_answers(incorrect))
        both = set(true) & set(false)
        true, false = [a for a in true if a not in both], [a for a in false if a not in both]
        if not question or not best:
            drops.drop("empty question or best answer")
        elif best in both:
            drops.drop("best answer also listed as incorrect")
        elif not false:
            drops.drop("no incorrect answer")
        else:
            items.append({
                "id": f"truthfulness-{position:06d}", "unit": f"truthfulness-{position:06d}",
                "prompt": TRUTHFULQA_MC_PROMPT.format(question=question),
                "answers": [" " + a for a in true + false],
                "correct": [True] * len(true) + [False] * len(false), "best": 0})
    drops.report()
    return _to_dataset(items, drops)


def _split_answers(answers: str | list[str]) -> list[str]:
    """A ``;``-separated answer list of the CSV, or the hub's list."""
    return answers.split(";") if isinstance(answers, str) else list(answers)


def _answers(answers: list[str]) -> list[str]:
    """Stripped, non-empty, each once, in order."""
    return list(dict.fromkeys(a.strip() for a in answers if a.strip()))


def _to_dataset(items: list[dict[str, Any]], drops: Drops) -> Dataset:
    if not items:
        raise DataError(f"{drops.source} holds no usable item: {remedy(drops.filename)}")
    return Dataset.from_list(items)
