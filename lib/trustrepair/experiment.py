"""What every notebook starts with: validated params, data and the base model.

``Experiment`` is the single entry point a notebook touches first. It fixes seeds and
threads, resolves where data comes from (real mirror, hub, or generated fixtures),
and hands out the datasets and model folders that the steps share.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset, DatasetDict, concatenate_datasets
from transformers import PreTrainedModel

from trustrepair import data
from trustrepair import plan as planning
from trustrepair.artifacts import is_main_process, read_json, write_json
from trustrepair.models import load_pretrained, prepare_base_model, resolve_device
from trustrepair.params import Params, load_params
from trustrepair.planted import plant_dialogues
from trustrepair.prefix import PrefixCache, for_tracked_blocks
from trustrepair.steps import RECOMPUTE_ENV, Step, find, fingerprint, sections_through


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Experiment:
    """One params file, its data and its run folder."""

    def __init__(self, params: Params):
        self.params = params
        self.recompute = os.environ.get(RECOMPUTE_ENV) == "1"
        seed_everything(params.seed)
        threads = os.environ.get("TRUSTREPAIR_THREADS") or params.threads
        if threads:
            torch.set_num_threads(int(threads))
        self.device = resolve_device(params.device)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides) -> Experiment:
        return cls(load_params(path, **overrides))

    @property
    def run_dir(self) -> Path:
        return self.params.run_dir()

    def fingerprint(self, step: Step) -> str:
        """Hash of every setting that the results of ``step`` depend on."""
        return fingerprint(self.params, sections_through(step))

    def cached(self, step: Step, path: Path, compute: Callable[[], dict]) -> dict:
        """Load a JSON result of ``step`` written under the same settings, or compute it.

        Lets an interrupted step resume without trusting results of other settings;
        ``recompute`` (``run --force``) ignores saved results. Of several processes
        (torchrun), only the main one writes.
        """
        path = Path(path)
        key = self.fingerprint(step)
        if path.exists() and not self.recompute:
            saved = read_json(path)
            if saved.get("fingerprint") == key:
                return saved
        result = {**compute(), "fingerprint": key}
        if is_main_process():
            write_json(path, result)
        return result

    def step_dir(self, step: Step | str) -> Path:
        """``step``'s folder in this run (a step or its name), created if need be."""
        found = find(step) if isinstance(step, str) else step
        if found is None:
            raise ValueError(f"no step named {step!r}: the steps are defined in "
                             f"trustrepair.steps")
        path = found.folder(self.run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def output(self, step: Step, artifact: str, **fields: str) -> Path:
        """Where ``step`` writes ``artifact`` in this run (see :meth:`Step.output`)."""
        return step.output(self.run_dir, artifact, **fields)

    @cached_property
    def data_source(self) -> str | None:
        """Folder the loaders read; generated fixtures for smoke runs."""
        if self.params.data.fixtures:
            folder = data.write_fixture_data(self.run_dir / "fixture_data",
                                             seed=self.params.data.seed)
            return str(folder)
        return None

    @cached_property
    def hh(self) -> DatasetDict:
        """SFT corpus, columns id, prompt, response: ``train`` (the SFT set, the first
        ``max_train`` train dialogues), ``validation`` (a seeded ``data.hh.validation`` of
        the train dialogues outside the SFT set, for choosing β) and ``test``."""
        p = self.params.data.hh
        splits = data.load_hh(p.source or self.data_source, test_fraction=p.test_fraction,
                              seed=self.params.data.seed, max_test=p.max_test)
        every = splits["train"]
        n_sft = min(len(every), p.max_train or len(every))
        splits["train"] = every.select(range(n_sft))
        rest = every.select([*range(n_sft, len(every))])  # may be empty: β fixed, all for SFT
        splits["validation"] = data.at_most(rest, p.validation, self.params.data.seed)
        if self.params.planted.per_aspect:
            harmful = plant_dialogues({a: s["train"] for a, s in self.trust.items()},
                                      self.params.planted.per_aspect, seed=self.params.data.seed)
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
            triples = data.load_trust(aspect, p.source or self.data_source,
                                      seed=self.params.data.seed, bias_split=p.bias_split,
                                      ethics_pairing=p.ethics_pairing)
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
        return lines

    def trust_test(self) -> dict[str, Dataset]:
        return {aspect: splits["test"] for aspect, splits in self.trust.items()}

    def trust_validation(self) -> dict[str, Dataset]:
        return {aspect: splits["validation"] for aspect, splits in self.trust.items()}

    @cached_property
    def base_model_dir(self) -> Path:
        """The base (pre-SFT) model as a ``save_pretrained`` folder, built once."""
        texts = None
        corpus_hash = ""
        if self.params.model.tiny is not None:
            texts = _tokenizer_corpus(self.hh["train"], self.trust)
            corpus_hash = hashlib.sha256("\n".join(texts).encode()).hexdigest()
        return prepare_base_model(self.params.model, self.params.cache_dir(),
                                  seed=self.params.data.seed, tokenizer_texts=texts,
                                  data_fingerprint=corpus_hash)

    def prefix_cache(self, model: PreTrainedModel, *,
                     attribution: bool = False) -> PrefixCache | None:
        """A cache of ``model``'s states below the tracked blocks, where ``prefix_cache``
        and the model's family allow one (else None: callers run the whole model)."""
        mode = self.params.prefix_cache
        if mode == "off" or (attribution and mode != "all"):
            return None
        directory = self.params.cache_dir() / "prefix" if self.params.prefix_cache_on_disk else None
        return for_tracked_blocks(model, self.params.attribution.tracked_blocks, directory)

    def checked_plan(self, *steps: str, probe: bool = True) -> str:
        """This run's plan as ``trustrepair plan`` prints it (no weights loaded; ``probe``
        times one random-init block for the time estimates).

        Raises :class:`~trustrepair.plan.PlanRefused`, before any compute, when one of
        ``steps`` (``sft``, ``attribution``, ``evaluation``) would not fit in the memory
        this machine has.
        """
        the_plan = planning.make_plan(self.params,
                                      planning.probe_for(self.params) if probe else None)
        available = planning.memory_available(the_plan.device)
        planning.check_fits(the_plan, *available, steps=steps)
        return planning.format_plan(the_plan, available)

    def load_model(self, path: str | os.PathLike[str] | None = None):
        """(model, tokenizer) from ``path`` (default: the base model), on the device."""
        model, tokenizer = load_pretrained(path or self.base_model_dir, self.params.model.dtype)
        return model.to(self.device), tokenizer


def _tokenizer_corpus(train: Dataset, trust: dict[str, DatasetDict]) -> list[str]:
    """Text a tiny model's tokenizer is trained on: everything but the test splits, which
    only the final evaluations read."""
    texts = list(train["prompt"]) + list(train["response"])
    for splits in trust.values():
        for split in ("train", "validation"):
            for column in ("prompt", "proponent", "opponent"):
                texts.extend(splits[split][column])
    return texts
