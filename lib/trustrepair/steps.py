"""The pipeline's steps, one declaration each: what a step reads and what it writes.

A step is a numbered notebook ``notebooks/<name>.ipynb`` that writes into
``runs/<config>/<name>/``. Its declaration is the one place that says which params
sections it reads (the runner's rerun rule and every result cache hash them), when it
applies, and which files it writes, by name. Later steps and the report find a result
with ``STEP.output(run_dir, name)``; no other module spells a step's folder or files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from trustrepair.params import UNKEYED, Params

TIMINGS = "timings.json"
"""Files of wall-clock seconds. They are recorded with a step's outputs but left out of what
later steps depend on: a rebuilt step whose results are identical leaves later steps current."""

TRAINED = {"model": "model", "metrics": "sft_metrics.json", "timings": TIMINGS,
           "checkpoints": "checkpoints"}
"""What a fine-tuning writes into its folder: step 01's own, and each retraining of step 05."""


def _always(params: Params) -> bool:
    return True


@dataclass(frozen=True, eq=False)
class Step:
    """One numbered notebook: the params sections it reads itself (it also depends on
    all that earlier steps read), when it applies, and its outputs, name -> path inside
    its folder (``{field}`` placeholders filled in by :meth:`output`)."""

    name: str
    reads: tuple[str, ...]
    outputs: Mapping[str, str] = field(default_factory=dict)
    applies: Callable[[Params], bool] = _always

    @property
    def notebook(self) -> str:
        return f"{self.name}.ipynb"

    def folder(self, run_dir: Path) -> Path:
        return Path(run_dir) / self.name

    def output(self, run_dir: Path, artifact: str, **fields: str) -> Path:
        """Where this step writes ``artifact`` in the run folder ``run_dir``."""
        if artifact not in self.outputs:
            raise KeyError(f"step {self.name} writes no {artifact!r}; its outputs are "
                           f"{sorted(self.outputs)}")
        return self.folder(run_dir) / self.outputs[artifact].format(**fields)

    def artifact_of(self, relative: str) -> str | None:
        """The declared output that the file ``relative`` (a path inside the step's folder)
        is, or lies in; None for a file the declaration does not name."""
        fixed_first = sorted(self.outputs.items(), key=lambda item: "{" in item[1])
        for artifact, pattern in fixed_first:
            regex = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(pattern))
            if re.fullmatch(f"{regex}(/.+)?", relative):
                return artifact
        return None

    def require(self, run_dir: Path, artifact: str, **fields: str) -> Path:
        """:meth:`output`, or a FileNotFoundError that says which step to run first."""
        path = self.output(run_dir, artifact, **fields)
        if not path.exists():
            number = self.name.split("_", 1)[0]
            raise FileNotFoundError(2, f"no {artifact} of step {self.name} at {path}: run that "
                                       f"step first (trustrepair run PARAMS --only {number})",
                                    str(path))
        return path


SFT = Step("01_sft", ("data", "planted", "model", "sft", "eval"),
           {"eval_pre": "eval_pre.json", "eval_post": "eval_post.json", **TRAINED})
ATTRIBUTION = Step("02_attribution", ("seed", "attribution"),
                   {"scores": "scores.safetensors", "features": "features.safetensors",
                    "summary": "attribution.json", "ranked": "scores_{target}.csv",
                    "kronfluence": "kronfluence"})
PLANTED = Step("02b_planted", (), {"recovery": "recovery.json", "kronfluence": "kronfluence"},
               applies=lambda params: params.planted.per_aspect > 0)
SELECTION = Step("03_dpp", ("selection",), {"subsets": "subsets.json"})
REPAIR = Step("04_repair", ("repair",),
              {"result": "repair.json", "beta_selection": "beta_selection.json",
               "model": "model_{target}"})
ABLATIONS = Step("05_ablations", ("ablations",),
                 {"result": "ablations.json", "evaluation": "evals/{name}.json",
                  "validation_evaluation": "evals/validation/{name}.json",
                  "variant": "variants/{name}.safetensors", "retrained": "{method}",
                  "dpo": "dpo", "kronfluence": "kronfluence"})
TIMING = Step("06_timing", ("timing",), {"result": "timing.json"})
PAPER = Step("07_paper", ())
HELDOUT = Step("08_heldout", ("heldout",), {"evaluation": "evals/{name}.json"},
               applies=lambda params: params.heldout.enabled)

STEPS: tuple[Step, ...] = (SFT, ATTRIBUTION, PLANTED, SELECTION, REPAIR, ABLATIONS, TIMING, PAPER,
                           HELDOUT)
"""In run order. The run's ``seed`` enters at step 02: SFT and the data read their own
(``sft.seed``, ``data.seed``), so seeds that share them share step 01."""

ALL_SECTIONS = ("seed", "device", "threads", "data", "planted", "model", "sft", "eval",
                "attribution", "selection", "repair", "ablations", "timing", "heldout")
"""What a notebook that is not one of :data:`STEPS` is assumed to read."""

MANIFEST = "manifest.json"
"""The run folder's record of each step: its key, status, seconds and outputs."""
PARAMS_COPY = "params.yaml"
"""The run folder's copy of the params, the file every notebook of the run loads."""



def find(name: str) -> Step | None:
    """The step of that notebook stem, or None for a notebook the registry does not know."""
    return next((step for step in STEPS if step.name == name), None)


def reads(name: str) -> tuple[str, ...]:
    """Sections the notebook ``name`` reads itself (all for an unknown notebook)."""
    step = find(name)
    return ALL_SECTIONS if step is None else step.reads


def enabled(name: str, params: Params) -> bool:
    """Whether the notebook ``name`` applies to these params (unknown notebooks do)."""
    step = find(name)
    return step is None or step.applies(params)


def sections_through(step: Step) -> tuple[str, ...]:
    """Sections a step's results depend on: its own and all earlier steps'."""
    names: list[str] = []
    for earlier in STEPS:
        names += [s for s in earlier.reads if s not in names]
        if earlier is step:
            return tuple(names)
    raise ValueError(f"{step.name} is not a registered step")


def fingerprint(params: Params, sections: tuple[str, ...]) -> str:
    """Short hash of the given sections' values."""
    dumped = params.model_dump(mode="json", include=set(sections), exclude=UNKEYED)
    return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]
