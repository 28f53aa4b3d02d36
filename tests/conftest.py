"""Shared fixtures: tiny models with a locally trained tokenizer, smoke params in tmp dirs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from trustrepair.data import write_fixture_data
from trustrepair.families import FAMILIES
from trustrepair.models import tiny_model
from trustrepair.params import TinyModelParams, load_params
from trustrepair.tokenizer import train_bpe_tokenizer

ROOT = Path(__file__).resolve().parents[1]
CORPUS = [
    "the cat sat on the mat and the dog ran to the park",
    "what is the capital of the land ? the answer is the big city",
    "you are a helpful assistant . tell me a fact about people",
    "people are kind and people are good at many things",
]


@pytest.fixture(scope="session")
def tokenizer():
    return train_bpe_tokenizer(CORPUS, vocab_size=300)


@pytest.fixture(scope="session", params=list(FAMILIES))
def tiny_lm(request, tokenizer):
    """A 3-block random-init model of each registered family, in eval mode."""
    spec = TinyModelParams(family=request.param, layers=3, hidden=32, heads=4, intermediate=64)
    return tiny_model(spec, len(tokenizer), seed=0)


@pytest.fixture(scope="session")
def fixture_data(tmp_path_factory) -> Path:
    return write_fixture_data(tmp_path_factory.mktemp("fixture_data"))


def smoke_params(tmp_path: Path, file: str = "params/smoke.yaml", **overrides):
    """Smoke params whose outputs all land under ``tmp_path``."""
    return load_params(ROOT / file, **{"paths.runs": str(tmp_path / "runs"),
                                       "paths.tables": str(tmp_path / "tables"),
                                       "paths.figures": str(tmp_path / "figures"),
                                       "paths.reports": str(tmp_path / "reports"),
                                       "paths.cache": str(tmp_path / "cache"), **overrides})


@pytest.fixture(autouse=True)
def _single_thread():
    torch.set_num_threads(1)
