"""Datasets of the paper: the SFT corpus (Anthropic HH) and the trust triples (m, p, o)."""

from trustrepair.aspects import ASPECTS
from trustrepair.data.fixtures import write_fixture_data
from trustrepair.data.hh import HH_FILENAME, HH_HUB_ID, load_hh, split_transcript
from trustrepair.data.published import PUBLISHED, provenance
from trustrepair.data.reading import DataError, DataWarning
from trustrepair.data.sources import DataNotFoundError, at_most, load_hub, resolve_source
from trustrepair.data.stereotypes import ANTI_STEREOTYPES
from trustrepair.data.trust import (
    BIAS_PROPONENTS,
    BIAS_SPLITS,
    ETHICS_PAIRINGS,
    anti_stereotype_source,
    load_anti_stereotypes,
    load_machine_ethics,
    load_stereotypical_bias,
    load_trust,
    load_truthfulness,
    split_trust,
    trust_source,
)

__all__ = [
    "ANTI_STEREOTYPES",
    "ASPECTS",
    "BIAS_PROPONENTS",
    "BIAS_SPLITS",
    "DataError",
    "DataNotFoundError",
    "DataWarning",
    "ETHICS_PAIRINGS",
    "HH_FILENAME",
    "HH_HUB_ID",
    "PUBLISHED",
    "anti_stereotype_source",
    "at_most",
    "load_hh",
    "load_anti_stereotypes",
    "load_hub",
    "load_machine_ethics",
    "load_stereotypical_bias",
    "load_trust",
    "load_truthfulness",
    "provenance",
    "resolve_source",
    "split_transcript",
    "split_trust",
    "trust_source",
    "write_fixture_data",
]
