"""Where a step runs and what it may reuse: params, seeds, device, run folder, saved results."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from trustrepair.artifacts import is_main_process, read_json, write_json
from trustrepair.models import resolve_device
from trustrepair.params import Params
from trustrepair.steps import Step, fingerprint, sections_through


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class RunContext:
    """One params file's run: seeds and threads fixed, the device chosen, and the run folder
    whose saved results a step resumes from unless told to ``recompute`` them."""

    def __init__(self, params: Params, *, recompute: bool = False):
        """``recompute`` (the notebook parameter that ``run --force`` sets): ignore this
        step's saved results instead of resuming from them."""
        self.params = params
        self.recompute = recompute
        seed_everything(params.seed)
        threads = os.environ.get("TRUSTREPAIR_THREADS") or params.threads
        if threads:
            torch.set_num_threads(int(threads))
        self.device = resolve_device(params.device)

    @property
    def run_dir(self) -> Path:
        return self.params.run_dir()

    def fingerprint(self, step: Step) -> str:
        """Hash of every setting that the results of ``step`` depend on."""
        return fingerprint(self.params, sections_through(step))

    def cached(self, step: Step, path: Path, compute: Callable[[], dict], *,
               reusable: Callable[[dict], bool] | None = None) -> dict:
        """Load a JSON result of ``step`` written under the same settings, or compute it.

        Lets an interrupted step resume without trusting results of other settings;
        ``recompute`` (``run --force``) ignores saved results. ``reusable`` rejects a saved
        result of the same settings that lacks a field added since (the fingerprint hashes
        settings, not the result's layout). Of several processes (torchrun), only the main
        one writes.
        """
        path = Path(path)
        key = self.fingerprint(step)
        if path.exists() and not self.recompute:
            saved = read_json(path)
            if saved.get("fingerprint") == key and (reusable is None or reusable(saved)):
                return saved
        result = {**compute(), "fingerprint": key}
        if is_main_process():
            write_json(path, result)
        return result

    def step_dir(self, step: Step) -> Path:
        """``step``'s folder in this run, created if need be."""
        path = step.folder(self.run_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def output(self, step: Step, artifact: str, **fields: str) -> Path:
        """Where ``step`` writes ``artifact`` in this run (see :meth:`Step.output`)."""
        return step.output(self.run_dir, artifact, **fields)
