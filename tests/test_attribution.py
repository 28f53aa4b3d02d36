"""Influence scores: the sign convention, finiteness checks and the saved artifacts."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file

from trustrepair.attribution import (
    SFTTrustTask,
    check_finite,
    collate_signed,
    detrimental,
    encode_triples,
    fit_and_score,
)
from trustrepair.data import load_hh, load_trust, split_trust
from trustrepair.metrics import collate, encode, trust_logodds
from trustrepair.models import decoder_blocks, tracked_linear_modules
from trustrepair.params import AttributionParams
from trustrepair.prefix import PrefixCache


@pytest.fixture(scope="module")
def small_data(fixture_data):
    train = load_hh(fixture_data, test_fraction=0.2, verify=False).get("train").select(range(24))
    triples = split_trust(load_trust("truthfulness", fixture_data, verify=False),
                          test_fraction=0.2)["train"]
    return train, triples.select(range(12))


def _tracked_parameters(model, names: list[str]) -> list[torch.nn.Parameter]:
    """Weights and biases of the tracked linears: what kronfluence differentiates."""
    modules = dict(model.named_modules())
    return [p for n in names for p in (modules[n].weight, modules[n].bias) if p is not None]


def _sft_loss_gradient(model, tokenizer, row: dict, names: list[str]) -> list[torch.Tensor]:
    batch = collate([encode(tokenizer, row["prompt"], row["response"], 64, add_eos=True)],
                    tokenizer.pad_token_id)
    logits = model(input_ids=batch["input_ids"]).logits[:, :-1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)),
                                             batch["labels"][:, 1:].reshape(-1), reduction="sum")
    return list(torch.autograd.grad(loss, _tracked_parameters(model, names)))


def test_sign_convention_holds_when_nudging_the_model(tiny_lm, tokenizer, small_data,
                                                      tmp_path) -> None:
    """Up-weighting a sample changes F_j by eps * its detrimental score (identity strategy)."""
    train, triples = small_data
    model = copy.deepcopy(tiny_lm).double()  # F_j changes of 1e-5 need float64 to resolve
    influence = fit_and_score(
        copy.deepcopy(model), tokenizer, train, {"truthfulness": triples},
        AttributionParams(strategy="identity", tracked_blocks=1, train_batch_size=8,
                          query_batch_size=8),
        out_dir=tmp_path, name="identity", sft_max_length=64, eval_max_length=64,
        normalized=True)
    harm = detrimental(influence.scores["truthfulness"])
    names = tracked_linear_modules(model, 1)
    assert names == influence.tracked_modules
    params = _tracked_parameters(model, names)
    before = trust_logodds(model, tokenizer, triples, max_length=64).mean
    for sample in (int(harm.argmax()), int(harm.argmin())):
        grads = _sft_loss_gradient(model, tokenizer, train[sample], names)
        eps = 1e-3 / max(g.norm() for g in grads).item()
        with torch.no_grad():  # a descent step on z's loss = up-weighting z
            for p, g in zip(params, grads, strict=True):
                p -= eps * g
        change = trust_logodds(model, tokenizer, triples, max_length=64).mean - before
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p += eps * g
        # detrimental > 0: up-weighting makes F_j worse (higher); < 0: better.
        assert change == pytest.approx(eps * harm[sample].item(), rel=0.05)
        assert (change > 0) == (harm[sample] > 0)


def test_detrimental_is_the_negated_score() -> None:
    scores = torch.tensor([1.0, -2.0, 0.5])
    assert int(detrimental(scores).argmax()) == 1


def test_non_finite_factors_name_the_module_and_the_fix() -> None:
    with pytest.raises(FloatingPointError, match=r"model.layers.1.mlp.up_proj.*float32.*damping"):
        check_finite({"model.layers.0.q": torch.ones(2),
                      "model.layers.1.mlp.up_proj": torch.tensor([1.0, float("nan")])},
                     "EK-FAC factors")


def test_ekfac_scores_are_finite_and_one_per_sample(tiny_lm, tokenizer, small_data,
                                                    tmp_path) -> None:
    train, triples = small_data
    queries = {"truthfulness": triples, "other": Dataset.from_list(triples.to_list()[:4])}
    influence = fit_and_score(
        copy.deepcopy(tiny_lm), tokenizer, train, queries,
        AttributionParams(train_batch_size=8, query_batch_size=8), out_dir=tmp_path, name="ekfac",
        sft_max_length=64, eval_max_length=64, normalized=True)
    for scores in influence.scores.values():
        assert scores.shape == (len(train),) and torch.isfinite(scores).all()
    assert not torch.allclose(influence.scores["truthfulness"], influence.scores["other"])


def test_scores_through_the_prefix_cache_match_the_whole_model(tiny_lm, tokenizer, small_data,
                                                               tmp_path) -> None:
    """Factors and scores from the tracked blocks alone, fed cached states, are the same."""
    train, triples = small_data
    model = copy.deepcopy(tiny_lm).double()  # float64: the comparison is not at rounding level
    params = AttributionParams(train_batch_size=8, query_batch_size=8, tracked_blocks=1)
    cache = PrefixCache(model, len(decoder_blocks(model)) - 1, tmp_path / "prefix")
    scores = {}
    for name, with_cache in (("whole", None), ("cached", cache)):
        torch.manual_seed(0)  # the true Fisher samples labels
        scores[name] = fit_and_score(
            copy.deepcopy(model), tokenizer, train, {"truthfulness": triples}, params,
            out_dir=tmp_path, name=name, sft_max_length=64, eval_max_length=64, normalized=True,
            cache=with_cache).scores["truthfulness"]
    assert cache.misses == len(cache.states) > len(train)  # SFT and query sequences
    shards = sorted(cache.directory.glob("*.safetensors"))  # one for SFT, one for the queries
    assert len(shards) == 2
    assert sum(len(load_file(shard)) for shard in shards) == len(cache.states)
    torch.testing.assert_close(scores["cached"], scores["whole"], rtol=1e-6, atol=1e-9)
    assert torch.equal(scores["cached"].argsort()[-5:], scores["whole"].argsort()[-5:])


def test_a_cache_above_the_tracked_blocks_is_refused(tiny_lm, tokenizer, small_data,
                                                     tmp_path) -> None:
    train, triples = small_data
    cache = PrefixCache(tiny_lm, len(decoder_blocks(tiny_lm)) - 1)
    with pytest.raises(ValueError, match="prefix cache ends at block"):
        fit_and_score(copy.deepcopy(tiny_lm), tokenizer, train, {"truthfulness": triples},
                      AttributionParams(tracked_blocks=2), out_dir=tmp_path, name="x",
                      sft_max_length=64, eval_max_length=64, normalized=True, cache=cache)


def test_the_common_score_does_not_let_one_aspects_scale_decide() -> None:
    """Each aspect is min-max normalised before the sum (eq. 7's γ̂, app. E.4): rescaling one
    aspect's scores leaves the common score, and so the common subset, unchanged."""
    from trustrepair import dpp
    from trustrepair.attribution import common_scores

    generator = torch.Generator().manual_seed(0)
    scores = {a: torch.randn(50, generator=generator) for a in ("a", "b", "c")}
    features = torch.randn(50, 8, generator=generator)
    rescaled = {**scores, "b": 1000 * scores["b"] + 3}
    assert torch.allclose(common_scores(rescaled), common_scores(scores), atol=1e-5)
    pick = dpp.select("dpp", features=features, scores=common_scores(scores), k=10, eta=100.0)
    assert dpp.select("dpp", features=features, scores=common_scores(rescaled), k=10,
                      eta=100.0) == pick
    assert dpp.select("dpp", features=features, scores=sum(rescaled.values()), k=10,
                      eta=100.0) != pick, "a raw sum is decided by the rescaled aspect"


def test_query_sequences_are_distinct_with_net_signs(tiny_lm, tokenizer) -> None:
    """A repeated sentence is one query with its net sign, a cancelling one none at all, and
    the measurement is still n_triples · F_j (float64: the computation is compared)."""
    model = copy.deepcopy(tiny_lm).double()
    triples = Dataset.from_list([
        {"prompt": "tell me a fact about people", "opponent": " people are bad",
         "proponent": " people are kind"},
        {"prompt": "tell me a fact about people", "opponent": " people are bad",
         "proponent": " people are good"},
        {"prompt": "tell me a fact about people", "opponent": " people are kind",
         "proponent": " people are good"},
        {"prompt": "the cat", "opponent": " ran to the park", "proponent": " sat on the mat"}])
    queries = encode_triples(tokenizer, triples, 64)
    signs = sorted(item["sign"] for item in queries.items)
    assert signs == [-2.0, -1.0, 1.0, 2.0]  # "kind" is once each way: left out
    task = SFTTrustTask(tracked_linear_modules(model))
    with torch.no_grad():
        measured = task.compute_measurement(
            collate_signed(queries.items, tokenizer.pad_token_id), model)
    assert measured.item() == pytest.approx(
        len(triples) * trust_logodds(model, tokenizer, triples).mean, rel=1e-9)


def _save_half_then_stop(save):
    """kronfluence's scores writer, cut off midway through its file."""
    def cut(output_dir, scores, **kwargs) -> None:
        save(output_dir, scores, **kwargs)
        path = next(Path(output_dir).glob("pairwise_scores*.safetensors"))
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        raise KeyboardInterrupt
    return cut


@pytest.mark.parametrize("where", ["after covariance", "while saving scores"])
def test_an_interrupted_fit_or_score_resumes_to_the_same_bytes(
        tiny_lm, tokenizer, small_data, tmp_path, monkeypatch, where: str) -> None:
    """Stopped after the covariance phase, or halfway through writing an aspect's scores,
    then run again: the factors and scores equal an uninterrupted run's bit for bit."""
    import kronfluence.computer.score_computer as score_computer
    from kronfluence.analyzer import Analyzer

    train, triples = small_data
    queries = {"truthfulness": triples, "other": Dataset.from_list(triples.to_list()[:4])}

    def run(folder: str):
        torch.manual_seed(0)  # as a fresh kernel would be
        return fit_and_score(
            copy.deepcopy(tiny_lm), tokenizer, train, queries,
            AttributionParams(train_batch_size=8, query_batch_size=8), out_dir=tmp_path / folder,
            name="ekfac", sft_max_length=64, eval_max_length=64, normalized=True)

    whole = run("whole")
    with monkeypatch.context() as patch:
        if where == "after covariance":
            def stop(*args, **kwargs) -> None:
                raise KeyboardInterrupt

            patch.setattr(Analyzer, "perform_eigendecomposition", stop)
        else:
            patch.setattr(score_computer, "save_pairwise_scores",
                          _save_half_then_stop(score_computer.save_pairwise_scores))
        with pytest.raises(KeyboardInterrupt):
            run("resumed")
    resumed = run("resumed")
    for aspect, scores in whole.scores.items():
        assert torch.equal(resumed.scores[aspect], scores), aspect
    for name in ("activation_covariance", "gradient_covariance", "lambda_matrix"):
        want = load_file(str(whole.factors_dir / f"{name}.safetensors"))
        got = load_file(str(resumed.factors_dir / f"{name}.safetensors"))
        assert want.keys() == got.keys()
        assert all(torch.equal(got[k], want[k]) for k in want), name
