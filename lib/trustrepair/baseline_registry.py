"""The baselines the ablation compares the repair with, one entry each.

The params schema (which names ``ablations.methods`` and ``ablations.baseline_grid`` may
use) and step 05 (how each is trained) read this table; it imports nothing heavy, so
params files are checked without loading torch.

To add a baseline: one :class:`Baseline` entry here, and its training function in
:mod:`trustrepair.ablations`, registered with ``@trains(name)`` (the algorithm itself
belongs in :mod:`trustrepair.baselines`). ``tests/test_ablations.py`` checks that every
entry has one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Baseline:
    description: str
    trains_through_prefix: bool
    """Whether its training reads the states below the tracked blocks from the post-SFT
    model's prefix cache. Every baseline changes only the tracked blocks, so its
    evaluations do either way."""
    nested_steps: bool
    """Whether its first n steps are exactly its run of n steps (plain SGD at a constant
    learning rate, batches drawn in order), so that one run to a grid's most steps gives
    every shorter point of the same learning rate. Not DPO: its learning rate decays over
    the steps asked for."""


BASELINES: dict[str, Baseline] = {
    "sga": Baseline("stochastic gradient ascent on S, in mini-batches",
                    trains_through_prefix=True, nested_steps=True),
    "ga": Baseline("gradient ascent on S, full batch", trains_through_prefix=True,
                   nested_steps=True),
    "ga_kl": Baseline("gradient ascent on S with a KL term on retained SFT samples",
                      trains_through_prefix=True, nested_steps=True),
    "dpo": Baseline("DPO on the aspect's trust train pairs (TRL)", trains_through_prefix=True,
                    nested_steps=False),
}
"""Method name in the tables -> what this package needs to know about it."""
