"""SFT corpus: Anthropic HH (static), one sample z = (x, y) per dialogue.

x is the dialogue up to and including its last "\\n\\nAssistant:" and y is that last assistant
turn, the cut of Dahoas/static-hh. The hub copy comes with its own train/test splits; the offline
mirror (the harmless-base test file of full transcripts) is re-cut here and split by a seeded
permutation, after dropping exact duplicates so no sample can sit on both sides.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from datasets import Dataset, DatasetDict

from trustrepair.data.reading import DataError, Drops, open_text, remedy
from trustrepair.data.sources import load_hub, resolve_source

HH_FILENAME = "hh-rlhf-harmless-base-test.jsonl.gz"
HH_HUB_ID = "Dahoas/static-hh"
ASSISTANT_TAG = "\n\nAssistant:"


def split_transcript(text: str) -> tuple[str, str]:
    """Cut a transcript into (prompt, response) at its last assistant tag.

    The prompt keeps the tag; the response keeps its leading space, so prompt + response gives
    back the transcript and tokenisation matches static-hh.
    """
    problem = _uncuttable(text)
    if problem:
        raise ValueError(f"transcript cannot be cut ({problem}): {text[-80:]!r}")
    cut = text.rfind(ASSISTANT_TAG) + len(ASSISTANT_TAG)
    return text[:cut], text[cut:]


def _uncuttable(text: str) -> str | None:
    """Why a transcript has no static-hh cut (a reason ``Drops`` counts), or None."""
    cut = text.rfind(ASSISTANT_TAG)
    if cut < 0:
        return "no assistant turn"
    if not text[cut + len(ASSISTANT_TAG):].strip():
        return "empty last assistant turn"
    return None


def load_hh(
    source: str | os.PathLike | None = None,
    *,
    test_fraction: float = 0.1,
    seed: int = 0,
    max_train: int | None = None,
    max_test: int | None = None,
    verify: bool = True,
) -> DatasetDict:
    """Train/test splits with columns ``id``, ``prompt``, ``response``.

    ``test_fraction`` and ``seed`` only apply to a local file (the hub has its own splits). The
    split does not depend on ``max_train``/``max_test``, which keep the first rows of each split.
    ``verify`` refuses a local copy of the mirror file that is not the published one (see
    ``Drops``).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, not {test_fraction}")
    resolved = resolve_source(source, filename=HH_FILENAME, hub_id=HH_HUB_ID)
    if isinstance(resolved, Path):
        splits = _split_local(_read_local(resolved, verify), test_fraction=test_fraction,
                              seed=seed)
    else:
        splits = _read_hub()
    limits = {"train": max_train, "test": max_test}
    return DatasetDict({
        name: ds.select(range(min(len(ds), limits[name] or len(ds))))
        for name, ds in splits.items()
    })


def _read_local(path: Path, verify: bool) -> list[dict[str, str]]:
    """Re-cut each "chosen" transcript; drop exact duplicates by design and count the lines
    that cannot be cut as unusable (``Drops`` warns or fails about those)."""
    drops = Drops(path, HH_FILENAME, verify)
    rows, seen = [], set()
    for position, line in enumerate(open_text(path, HH_FILENAME)):
        if not line.strip():
            continue
        drops.rows += 1
        cut = _cut_line(line)
        if isinstance(cut, str):
            drops.drop(cut)
            continue
        if cut in seen:
            continue
        seen.add(cut)
        prompt, response = cut
        rows.append({"id": f"hh-{position:06d}", "prompt": prompt, "response": response})
    drops.report()
    if not rows:
        raise DataError(f"{path} holds no dialogue: {remedy(HH_FILENAME)}")
    return rows


def _cut_line(line: str) -> tuple[str, str] | str:
    """(prompt, response) of a JSON line's "chosen" transcript, or why it has none."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return "unparseable JSON line"
    transcript = record.get("chosen") if isinstance(record, dict) else None
    if not isinstance(transcript, str):
        return "no 'chosen' transcript"
    return _uncuttable(transcript) or split_transcript(transcript)


def _split_local(rows: list[dict[str, str]], *, test_fraction: float, seed: int) -> DatasetDict:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_test = round(len(rows) * test_fraction)
    return DatasetDict(
        train=Dataset.from_list([rows[i] for i in order[n_test:]]),
        test=Dataset.from_list([rows[i] for i in order[:n_test]]),
    )


def _read_hub() -> DatasetDict:
    hub = load_hub(HH_HUB_ID, filename=HH_FILENAME)
    splits = {}
    for name in ("train", "test"):
        ds = hub[name].select_columns(["prompt", "chosen"]).rename_column("chosen", "response")
        ids = [f"{name}-{i:06d}" for i in range(len(ds))]
        splits[name] = ds.add_column("id", ids).select_columns(["id", "prompt", "response"])
    return DatasetDict(splits)
