"""The run's models: the base model built once, models loaded onto the device, the prefix
cache that evaluations of repaired variants share, and the memory check before a step."""

from __future__ import annotations

import hashlib
import os
from functools import cached_property
from pathlib import Path

import torch
from transformers import PreTrainedModel

from trustrepair import plan as planning
from trustrepair.models import load_pretrained, prepare_base_model
from trustrepair.params import Params
from trustrepair.prefix import PrefixCache, for_tracked_blocks
from trustrepair.profiling import phase
from trustrepair.run_data import RunData


class ModelStore:
    """Models of one run on ``device``; ``data`` trains a tiny model's tokenizer."""

    def __init__(self, params: Params, device: torch.device, data: RunData):
        self.params, self.device, self.data = params, device, data
        self._last_cache: PrefixCache | None = None

    @cached_property
    def base_dir(self) -> Path:
        """The base (pre-SFT) model as a ``save_pretrained`` folder, built once."""
        texts = None
        corpus_hash = ""
        if self.params.model.tiny is not None:
            texts = self.data.tokenizer_corpus()
            corpus_hash = hashlib.sha256("\n".join(texts).encode()).hexdigest()
        return prepare_base_model(self.params.model, self.params.cache_dir(),
                                  seed=self.params.data.seed, tokenizer_texts=texts,
                                  data_fingerprint=corpus_hash)

    def prefix_cache(self, model: PreTrainedModel, *,
                     attribution: bool = False) -> PrefixCache | None:
        """A cache of ``model``'s states below the tracked blocks, where ``prefix_cache``
        and the model's family allow one (else None: callers run the whole model).

        Models with the same lower blocks (step 08's post-SFT, repaired and baseline
        models, loaded one after another) get the same cache, so the states one of them
        read or computed serve the next without a second read of the shards on disk.
        """
        mode = self.params.prefix_cache
        if mode == "off" or (attribution and mode != "all"):
            return None
        if self._last_cache is not None and self._last_cache.admits(model):
            return self._last_cache  # its states in RAM: not read from disk again
        directory = self.params.cache_dir() / "prefix" if self.params.prefix_cache_on_disk else None
        self._last_cache = for_tracked_blocks(model, self.params.attribution.tracked_blocks,
                                              directory)
        return self._last_cache

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

    def load(self, path: str | os.PathLike[str] | None = None):
        """(model, tokenizer) from ``path`` (default: the base model), on the device."""
        with phase("loading models"):
            model, tokenizer = load_pretrained(path or self.base_dir, self.params.model.dtype)
        return model.to(self.device), tokenizer
