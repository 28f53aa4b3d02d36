"""Where a run's seconds go: named phases, timed where they run, kept apart from results.

``with phase("sft"):`` appends one JSON line (phase, wall-clock end, seconds) to the file
named by ``$TRUSTREPAIR_PROFILE``; without that variable it does nothing. A phase's seconds
exclude those of the phases inside it, so the lines of a run add up to the time they
cover. ``benchmarks/profile_run.py`` runs a params file with the variable set and sums the
lines per step of the run's manifest; nothing a step saves depends on them.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator

PROFILE_ENV = "TRUSTREPAIR_PROFILE"
_inner_seconds: list[float] = []
"""Per open phase, the seconds of the phases inside it so far."""


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as ``name`` when ``$TRUSTREPAIR_PROFILE`` names a file."""
    path = os.environ.get(PROFILE_ENV)
    if not path:
        yield
        return
    start = time.perf_counter()
    _inner_seconds.append(0.0)
    try:
        yield
    finally:
        seconds = time.perf_counter() - start
        inner = _inner_seconds.pop()
        if _inner_seconds:
            _inner_seconds[-1] += seconds
        with open(path, "a") as out:
            out.write(json.dumps({"phase": name, "end": time.time(),
                                  "seconds": round(seconds - inner, 3)}) + "\n")


def per_step(lines: list[dict], steps: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Step -> phase -> seconds, from a profile's lines and a manifest's ``steps`` (each
    with ``started`` and ``seconds``); a line counts in the step during which it ended.
    ``other`` is what no phase covers: kernel start, imports, data, tables and figures."""
    out: dict[str, dict[str, float]] = {}
    for step, record in steps.items():
        if "started" not in record or "seconds" not in record:
            continue
        start, end = record["started"], record["started"] + record["seconds"]
        phases: dict[str, float] = {}
        for line in lines:
            if start <= line["end"] <= end:
                phases[line["phase"]] = phases.get(line["phase"], 0.0) + line["seconds"]
        phases["other"] = max(record["seconds"] - sum(phases.values()), 0.0)
        out[step] = phases
    return out
