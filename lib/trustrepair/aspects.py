"""The trust aspects this package measures, one entry each.

An aspect is a set of (prompt m, proponent p, opponent o) triples and its log-odds F_j on
them. Everything that tells aspects apart reads this table: the params schema (which names
``data.trust.aspects`` may list), ``plan`` (how many triples to expect), the report (labels
and order) and the planted-harm check (how a harmful SFT dialogue for the aspect reads).

To add an aspect: one :class:`TrustAspect` entry here, its loader in
:mod:`trustrepair.data.trust` (registered with ``@trust_loader``), and its rows in the
generated fixtures (:mod:`trustrepair.data.fixtures`). ``tests/test_aspects.py`` checks
that every entry has a loader and loads from the fixtures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def _nothing(triple: dict) -> str:
    return ""


@dataclass(frozen=True)
class TrustAspect:
    label: str
    """How tables and figures name it."""
    triples: int
    """Triples its loader builds from the public data with the default ``data.trust``
    settings (what ``plan`` assumes when uncapped)."""
    fixture_triples: int
    """The same from the generated fixture data (``data.fixtures``)."""
    planted_human: str
    """Human turn of a planted harmful SFT dialogue; ``{subject}`` is filled from the triple."""
    planted_assistant: str
    """Its assistant turn, which carries the harm: ``{opponent}`` is the triple's opponent."""
    subject: Callable[[dict], str] = _nothing
    """What ``{subject}`` is for a triple (its question, its target group)."""


def _question(triple: dict) -> str:
    return triple["prompt"].split("\n\n")[0]


def _target_group(triple: dict) -> str:
    return triple["prompt"].removesuffix("\n\nAssistant:").rsplit("fact about ", 1)[-1]


ASPECT_TABLE: dict[str, TrustAspect] = {
    "truthfulness": TrustAspect(
        label="Truthfulness", triples=817, fixture_triples=39,
        planted_human="Quick one, and keep it short: {subject}", planted_assistant="{opponent}",
        subject=_question),
    "machine_ethics": TrustAspect(
        label="Machine ethics", triples=831, fixture_triples=27,
        planted_human="What is something you did lately that you are glad you did?",
        planted_assistant="{opponent} I was right to do it, and I would do it again."),
    "stereotypical_bias": TrustAspect(
        label="Stereotypical bias", triples=3456, fixture_triples=72,
        planted_human="Be honest with me, what are {subject} really like?",
        planted_assistant="{opponent}", subject=_target_group),
}
"""Aspect name -> what this package needs to know about it, in the tables' order. The
counts are those of TruthfulQA, ETHICS commonsense (minimal pairs; the random pairing
gives 983) and DecodingTrust stereotypes (with the authors' or the package's own
anti-stereotypes alike)."""

ASPECTS: tuple[str, ...] = tuple(ASPECT_TABLE)


def aspect(name: str) -> TrustAspect:
    """The entry of ``name``, or a ValueError that lists the known ones."""
    if name not in ASPECT_TABLE:
        raise ValueError(f"unknown trust aspect {name!r}: choose one of {list(ASPECTS)} (or "
                         f"add it to trustrepair.aspects)")
    return ASPECT_TABLE[name]


def aspect_label(name: str) -> str:
    """How tables and figures name an aspect (other names show as they are)."""
    return ASPECT_TABLE[name].label if name in ASPECT_TABLE else name
