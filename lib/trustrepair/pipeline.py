"""The steps in order and the params sections each one reads.

One table serves the runner (which notebook must rerun) and every step's result cache
(which saved result is still valid), so the two can never disagree.
"""

from __future__ import annotations

import hashlib
import json

from trustrepair.params import UNKEYED, Params

STEP_SECTIONS: dict[str, tuple[str, ...]] = {
    "00_data": ("data",),
    "01_sft": ("data", "planted", "model", "sft", "eval"),
    "02_attribution": ("seed", "attribution"),
    "02b_planted": (),
    "03_dpp": ("selection",),
    "04_repair": ("repair",),
    "05_ablations": ("ablations",),
    "06_timing": ("timing",),
    "07_paper": (),
}
"""Sections a step reads itself; it also depends on everything its predecessors read.
The run's ``seed`` enters at step 02: SFT and the data read their own (``sft.seed``,
``data.seed``), so seeds that share them share steps 00-01."""

ALL_SECTIONS = ("seed", "device", "threads", "data", "planted", "model", "sft", "eval",
                "attribution", "selection", "repair", "ablations", "timing")


def enabled(step: str, params: Params) -> bool:
    """Whether a step applies to these params (the planted-harm check only when planting)."""
    return step != "02b_planted" or params.planted.per_aspect > 0


def sections_through(step: str) -> tuple[str, ...]:
    """Sections a step's results depend on: its own and all earlier steps' (all if unknown)."""
    if step not in STEP_SECTIONS:
        return ALL_SECTIONS
    names: list[str] = []
    for name, sections in STEP_SECTIONS.items():
        names += [s for s in sections if s not in names]
        if name == step:
            return tuple(names)
    raise AssertionError(step)


def fingerprint(params: Params, sections: tuple[str, ...]) -> str:
    """Short hash of the given sections' values."""
    dumped = params.model_dump(mode="json", include=set(sections), exclude=UNKEYED)
    return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]
