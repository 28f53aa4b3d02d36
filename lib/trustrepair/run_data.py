"""The datasets of one run, split as every step sees them, and checked before compute.

HH comes as the SFT set (planted dialogues included), a validation set for choosing β and a
test set; each trust aspect as train (attribution queries), validation and test triples; the
held-out benchmarks as the items that only step 08's final evaluation scores.
Where the data come from (the local mirror, the hub, or generated fixtures for a smoke run)
is resolved here, once, and every local file read is recorded (``provenance``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, concatenate_datasets

from trustrepair import data
from trustrepair.data import heldout
from trustrepair.heldout_registry import HELDOUT_BENCHMARKS
from trustrepair.params import Params
from trustrepair.planted import plant_dialogues


class RunData:
    """The HH and trust splits that ``params`` asks for."""

    def __init__(self, params: Params):
        self.params = params

    @cached_property
    def data_source(self) -> str | None:
        """Folder the loaders read; generated fixtures for smoke runs."""
        if self.params.data.fixtures:
            folder = data.write_fixture_data(self.params.run_dir() / "fixture_data",
                                             seed=self.params.data.seed)
            return str(folder)
        return None

    @property
    def verify(self) -> bool:
        """Refuse mirror files that are not the published ones; generated fixtures are not."""
        return self.params.data.verify and not self.params.data.fixtures

    @cached_property
    def hh(self) -> DatasetDict:
        """SFT corpus, columns id, prompt, response: ``train`` (the SFT set, the first
        ``max_train`` train dialogues), ``validation`` (a seeded ``data.hh.validation`` of
        the train dialogues outside the SFT set, for choosing β) and ``test``."""
        p = self.params.data.hh
        with _blaming("data.hh.source", p.source):
            splits = data.load_hh(p.source or self.data_source, test_fraction=p.test_fraction,
                                  seed=self.params.data.seed, max_test=p.max_test,
                                  verify=self.verify)
        every = splits["train"]
        n_sft = min(len(every), p.max_train or len(every))
        splits["train"] = every.select(range(n_sft))
        rest = every.select([*range(n_sft, len(every))])  # may be empty: β fixed, all for SFT
        splits["validation"] = data.at_most(rest, p.validation, self.params.data.seed)
        planted = self.params.planted
        if planted.per_aspect:
            queries = {a: s["train"] for a, s in self.trust.items()}
            harmful = plant_dialogues(
                {a: s[planted.source] for a, s in self.trust.items()}, planted.per_aspect,
                seed=self.params.data.seed, queries=None if planted.source == "train" else queries)
            splits["train"] = concatenate_datasets(
                [splits["train"], harmful.select_columns(splits["train"].column_names)])
        return splits

    @cached_property
    def trust(self) -> dict[str, DatasetDict]:
        """Trust triples per aspect: ``train`` (attribution queries, planting; capped by
        ``max_train``), ``validation`` (``validation_fraction`` of the train split, by the
        same grouping unit, for choosing β) and ``test`` (capped by ``max_test``)."""
        p = self.params.data.trust
        out = {}
        for aspect in p.aspects:
            with _blaming("data.trust.source", p.source):
                triples = data.load_trust(aspect, p.source or self.data_source,
                                          seed=self.params.data.seed, bias_split=p.bias_split,
                                          bias_proponents=p.bias_proponents,
                                          ethics_pairing=p.ethics_pairing, verify=self.verify)
            splits = data.split_trust(triples, test_fraction=p.test_fraction,
                                      seed=self.params.data.seed)
            try:
                held_out = data.split_trust(splits["train"], test_fraction=p.validation_fraction,
                                            seed=self.params.data.seed)
            except ValueError as err:
                raise ValueError(f"{aspect}: data.trust.validation_fraction="
                                 f"{p.validation_fraction}: {err}") from None
            splits["train"] = data.at_most(held_out["train"], p.max_train, self.params.data.seed)
            splits["validation"] = held_out["test"]
            splits["test"] = data.at_most(splits["test"], p.max_test, self.params.data.seed)
            out[aspect] = splits
        return out

    @cached_property
    def heldout(self) -> dict[str, Dataset]:
        """Held-out benchmark -> its items (:mod:`trustrepair.data.heldout`), in the order of
        :data:`~trustrepair.heldout_registry.HELDOUT_BENCHMARKS`.

        BBQ: ``heldout.bbq_per_cell`` items of each category × context condition × question
        polarity; MoralChoice: ``heldout.moralchoice_items`` scenarios; both drawn with
        ``data.seed``. TruthfulQA: the questions of the truthfulness test triples alone
        (after ``data.trust.max_test``), so that no question that attribution or the choice
        of β saw is scored; absent when truthfulness is not among ``data.trust.aspects``.
        """
        p, seed = self.params.heldout, self.params.data.seed
        trust_source = self.params.data.trust.source or self.data_source
        source = p.source or trust_source
        out = {}
        with _blaming("heldout.source", p.source):
            cells = []
            for category in p.bbq_categories:
                items = heldout.load_bbq(category, source, verify=self.verify)
                kinds = list(zip(items["context_condition"], items["question_polarity"],
                                 strict=True))
                for kind in itertools.product(heldout.BBQ_CONDITIONS, heldout.BBQ_POLARITIES):
                    cell = items.select([i for i, k in enumerate(kinds) if k == kind])
                    cells.append(data.at_most(cell, p.bbq_per_cell, seed))
            out["bbq"] = concatenate_datasets(cells)
            out["moralchoice"] = data.at_most(
                heldout.load_moralchoice(source, verify=self.verify), p.moralchoice_items, seed)
        if "truthfulness" in self.trust:
            with _blaming("data.trust.source", self.params.data.trust.source):
                questions = heldout.load_truthfulqa_mc(trust_source, verify=self.verify)
            tested = set(self.trust["truthfulness"]["test"]["id"])
            out["truthfulqa_mc"] = questions.select(
                [i for i, id_ in enumerate(questions["id"]) if id_ in tested])
        return {name: out[name] for name in HELDOUT_BENCHMARKS if name in out}

    def check_data(self) -> list[str]:
        """Load every dataset and check requested sizes, before any compute.

        Returns one summary line per dataset; raises ValueError naming the field to fix.
        """
        hh = self.params.data.hh
        for split, cap in (("train", hh.max_train), ("test", hh.max_test)):
            have = len(self.hh[split])
            if cap is not None and cap > have:
                raise ValueError(f"data.hh.max_{split}={cap} but the SFT corpus has only "
                                 f"{have} {split} dialogues: lower it or set it to null")
        n_train, n_validation = len(self.hh["train"]), len(self.hh["validation"])
        if self.params.repair.beta is None and n_validation < hh.validation:
            raise ValueError(f"data.hh.validation={hh.validation} but only {n_validation} HH train "
                             f"dialogues lie outside the SFT set: lower it or data.hh.max_train, "
                             f"or fix repair.beta")
        if self.params.selection.k > n_train:
            raise ValueError(f"selection.k={self.params.selection.k} is larger than the {n_train} "
                             f"SFT train samples: lower selection.k or raise data.hh.max_train")
        lines = [f"hh: {n_train} train / {n_validation} validation / {len(self.hh['test'])} test "
                 f"dialogues"]
        for aspect, splits in self.trust.items():
            if len(splits["train"]) == 0 or len(splits["test"]) == 0:
                raise ValueError(f"{aspect}: empty train or test split; check "
                                 f"data.trust.test_fraction and the data source")
            lines.append(f"{aspect}: {len(splits['train'])} train / "
                         f"{len(splits['validation'])} validation / {len(splits['test'])} test "
                         f"triples")
        if self.params.heldout.enabled:
            lines += [f"held out {name}: {len(items)} items"
                      for name, items in self.heldout.items()]
        return lines

    def provenance(self) -> list[dict[str, Any]]:
        """Every local file this run reads, once (data from the hub is not listed): file,
        size, SHA-256, rows, usable rows and whether it is the published file. Loads the data
        first, so the usable rows are those its loaders counted."""
        self.hh, self.trust  # noqa: B018 (loaded on first access)
        hh, trust = self.params.data.hh, self.params.data.trust
        sources = [data.resolve_source(hh.source or self.data_source, filename=data.HH_FILENAME,
                                       hub_id=data.HH_HUB_ID)]
        sources += [data.trust_source(aspect, trust.source or self.data_source)
                    for aspect in trust.aspects]
        if "stereotypical_bias" in trust.aspects and trust.bias_proponents == "authors":
            sources.append(data.anti_stereotype_source(trust.source or self.data_source))
        if self.params.heldout.enabled:
            self.heldout  # noqa: B018 (loaded on first access)
            folder = self.params.heldout.source or trust.source or self.data_source
            sources += [data.resolve_source(folder, filename=heldout.bbq_filename(category),
                                            hub_id=heldout.BBQ_HUB_ID)
                        for category in self.params.heldout.bbq_categories]
            sources.append(data.resolve_source(folder, filename=heldout.MORALCHOICE_FILENAME,
                                               hub_id=None))
        return [data.provenance(path)
                for path in dict.fromkeys(sources) if isinstance(path, Path)]

    def trust_test(self) -> dict[str, Dataset]:
        return {aspect: splits["test"] for aspect, splits in self.trust.items()}

    def trust_validation(self) -> dict[str, Dataset]:
        return {aspect: splits["validation"] for aspect, splits in self.trust.items()}

    def tokenizer_corpus(self) -> list[str]:
        """Text a tiny model's tokenizer is trained on: everything but the test splits,
        which only the final evaluations read."""
        texts = list(self.hh["train"]["prompt"]) + list(self.hh["train"]["response"])
        for splits in self.trust.values():
            for split in ("train", "validation"):
                for column in ("prompt", "proponent", "opponent"):
                    texts.extend(splits[split][column])
        return texts


@contextmanager
def _blaming(field: str, source: str | None) -> Iterator[None]:
    """A source the params name but that does not exist is that field's fault: say so."""
    try:
        yield
    except data.DataNotFoundError as err:
        if source is None:
            raise
        raise data.DataNotFoundError(f"{field}: {err}") from None
