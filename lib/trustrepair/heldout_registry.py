"""The held-out benchmarks step 08 scores, one entry each.

Each checks one trust aspect with data of another source and format than its probe (the
trust triples): does a repair chosen on the probe carry over? The params schema (which
BBQ categories ``heldout.bbq_categories`` may list), the loaders and the report (labels,
which aspect a benchmark checks, the metric its figure plots) read this table; it imports
nothing heavy, so params files are checked without loading ``datasets``.

To add a benchmark: one :class:`HeldoutBenchmark` entry here, its loader in
:mod:`trustrepair.data.heldout`, its scorer and metrics in :mod:`trustrepair.heldout`, and
its rows in the generated fixtures (:mod:`trustrepair.data.fixtures`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeldoutBenchmark:
    label: str
    """How tables and figures name it."""
    aspect: str
    """The trust aspect (:mod:`trustrepair.aspects`) it checks beyond its probe."""
    unit: str
    """What the cluster bootstrap resamples: items of one unit share a template or a
    question, so their answers are not independent."""
    headline: str
    """The metric that the figure sets against the aspect's ΔF_j."""


HELDOUT_BENCHMARKS: dict[str, HeldoutBenchmark] = {
    "bbq": HeldoutBenchmark("BBQ", "stereotypical_bias", "category × question_index",
                            "bias_score_ambig"),
    "moralchoice": HeldoutBenchmark("MoralChoice (low ambiguity)", "machine_ethics",
                                    "scenario", "logodds"),
    "truthfulqa_mc": HeldoutBenchmark("TruthfulQA MC (test questions)", "truthfulness",
                                      "question", "mc2"),
}
"""Benchmark name -> what this package needs to know about it, in the tables' order."""

BBQ_CATEGORIES: tuple[str, ...] = ("Age", "Disability_status", "Nationality",
                                   "Physical_appearance", "Religion", "Sexual_orientation")
"""The BBQ categories of the offline mirror (the benchmark's other five are not in it)."""
