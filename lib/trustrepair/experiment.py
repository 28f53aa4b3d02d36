"""What every notebook starts with: ``Experiment.from_file(params_file, recompute=...)``.

An ``Experiment`` is the run's :class:`~trustrepair.context.RunContext` (params, seeds,
device, run folder, saved results) with the two things a step reads through it:
``exp.data`` (:class:`~trustrepair.run_data.RunData`, the splits) and ``exp.models``
(:class:`~trustrepair.model_store.ModelStore`, the models). Code that needs only one of
them takes only that one.
"""

from __future__ import annotations

import os

from trustrepair.context import RunContext
from trustrepair.model_store import ModelStore
from trustrepair.params import Params, load_params
from trustrepair.run_data import RunData


class Experiment(RunContext):
    """One params file's run context, data and models."""

    def __init__(self, params: Params, *, recompute: bool = False):
        super().__init__(params, recompute=recompute)
        self.data = RunData(params)
        self.models = ModelStore(params, self.device, self.data)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, recompute: bool = False,
                  **overrides) -> Experiment:
        return cls(load_params(path, **overrides), recompute=recompute)
