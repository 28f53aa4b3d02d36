"""Step results that later steps (and the report) read, typed.

Each step saves its results as JSON; the few that another step consumes are read back here,
into dataclasses, so that a consumer names fields instead of walking nested dicts and a
change of layout shows up in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trustrepair.artifacts import read_json
from trustrepair.params import Params
from trustrepair.steps import ATTRIBUTION, REPAIR, SELECTION


def factors_dir(run_dir: Path) -> Path:
    """Where step 02 saved the EK-FAC factors that every later PBRF step reuses."""
    return Path(read_json(ATTRIBUTION.require(run_dir, "summary"))["factors_dir"])


@dataclass(frozen=True)
class Subsets:
    """Step 03's result: per target (each aspect and ``common``) and selector, the SFT
    sample indices in selection order and their ids."""

    k: int
    eta: float
    indices: dict[str, dict[str, list[int]]]
    ids: dict[str, dict[str, list[str]]]

    @classmethod
    def load(cls, run_dir: Path) -> Subsets:
        saved = read_json(SELECTION.require(run_dir, "subsets"))
        picks = saved["subsets"]
        return cls(k=saved["k"], eta=saved["eta"],
                   indices={t: {name: pick["indices"] for name, pick in by_selector.items()}
                            for t, by_selector in picks.items()},
                   ids={t: {name: pick["ids"] for name, pick in by_selector.items()}
                        for t, by_selector in picks.items()})

    def of(self, selector: str) -> dict[str, list[int]]:
        """target -> the indices that ``selector`` picked."""
        return {target: by_selector[selector] for target, by_selector in self.indices.items()}


_RANDOM_DRAW = "random_seed"
"""How step 05 names each random subset it repairs with: this, then the draw's seed."""


def random_draw_name(seed: int) -> str:
    return f"{_RANDOM_DRAW}{seed}"


def is_random_draw(method: str) -> bool:
    """Whether a table row is one random draw; the ``random`` row is their mean."""
    return method.startswith(_RANDOM_DRAW)


def reported_beta(params: Params) -> float:
    """β of the repair the tables report: ``repair.beta`` when fixed, else step 04's choice."""
    if params.repair.beta is not None:
        return params.repair.beta
    return read_json(REPAIR.require(params.run_dir(), "result"))["beta"]
