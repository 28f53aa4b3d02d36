"""The ablation's baselines: what they move, which way, and their guard rails."""

from __future__ import annotations

import contextlib

import pytest
import torch
import trl.trainer.utils
from datasets import Dataset

from trustrepair import baselines
from trustrepair.metrics import IGNORE, collate, encode_dialogues, sequence_logprobs
from trustrepair.models import decoder_blocks, tracked_linear_modules
from trustrepair.prefix import PrefixCache
from trustrepair.repair import subset_gradient

SUBSET = Dataset.from_dict({
    "prompt": ["what is the capital of the land ?", "tell me a fact about people",
               "where did the dog run ?", "what did the cat do ?"],
    "response": [" the answer is the big city", " people are kind", " the dog ran to the park",
                 " the cat sat on the mat"]})
RETAIN = Dataset.from_dict({
    "prompt": ["you are a helpful assistant .", "what are people good at ?",
               "tell me about the land"],
    "response": [" tell me a fact", " people are good at many things", " the land is big"]})
PAIRS = Dataset.from_dict({
    "prompt": ["what is the capital ?", "tell me a fact", "what are people ?",
               "where is the cat ?"],
    "chosen": [" the big city", " people are kind", " people are good", " on the mat"],
    "rejected": [" the cat sat", " the dog ran", " the park", " the big land"]})
MAX_LENGTH = 32
METHODS = {
    "ga": (baselines.gradient_ascent, {"subset": SUBSET, "lr": 1e-2, "steps": 2}),
    "sga": (baselines.gradient_ascent, {"subset": SUBSET, "lr": 1e-2, "steps": 2,
                                        "batch_size": 2}),
    "ga_kl": (baselines.gradient_ascent_kl, {"subset": SUBSET, "retain": RETAIN, "lr": 1e-2,
                                             "steps": 2, "kl_weight": 1.0}),
    "dpo": (baselines.dpo, {"pairs": PAIRS, "lr": 1e-2, "steps": 2, "beta": 0.1,
                            "batch_size": 2}),
}


def _run(method: str, model, tokenizer, tmp_path, **overrides):
    function, defaults = METHODS[method]
    kwargs = {"modules": tracked_linear_modules(model), "max_length": MAX_LENGTH, **defaults,
              **overrides}
    if method == "dpo":
        kwargs["output_dir"] = tmp_path
    return function(model, tokenizer, **kwargs)


def _state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.state_dict().items()}


def _subset_loss(model, tokenizer) -> float:
    """Summed response cross-entropy (+ EOS) over the subset: what GA ascends."""
    return -float(sequence_logprobs(model, tokenizer, SUBSET["prompt"], SUBSET["response"],
                                    max_length=MAX_LENGTH, normalized=False,
                                    add_eos=True).sum())


def _retain_kl(reference, model, tokenizer) -> float:
    """Mean over retained dialogues of the summed KL(reference ‖ model) at response tokens."""
    batch = collate(encode_dialogues(tokenizer, RETAIN, MAX_LENGTH), tokenizer.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        log_p = torch.log_softmax(reference(**inputs).logits[:, :-1].float(), -1)
        log_q = torch.log_softmax(model(**inputs).logits[:, :-1].float(), -1)
    per_token = (log_p.exp() * (log_p - log_q)).sum(-1) * (batch["labels"][:, 1:] != IGNORE)
    return float(per_token.sum() / len(RETAIN))


@pytest.mark.parametrize("method", list(METHODS))
def test_only_the_modules_move_and_the_input_stays(method, tiny_lm, tokenizer,
                                                   tmp_path) -> None:
    original = _state(tiny_lm)
    modules = tracked_linear_modules(tiny_lm)
    moved = _run(method, tiny_lm, tokenizer, tmp_path)
    assert moved is not tiny_lm
    assert all(torch.equal(original[n], p) for n, p in tiny_lm.state_dict().items())
    changed = {n for n, p in moved.state_dict().items() if not torch.equal(original[n], p)}
    assert changed, "nothing moved"
    assert all(n.rsplit(".", 1)[0] in modules for n in changed), sorted(changed)
    assert not moved.training
    logits = moved(input_ids=torch.tensor([[1, 5, 6]])).logits
    assert logits.shape[-1] == len(tokenizer)


@pytest.mark.parametrize("loss_reduction", ["sum", "mean"])
@pytest.mark.parametrize("method", ["ga", "ga_kl"])
def test_ga_is_a_plain_sgd_ascent_step(method, loss_reduction, tiny_lm, tokenizer,
                                       tmp_path) -> None:
    """One full-batch step is θ + lr · mean_S ∇L: the repair's step without (G + λI)⁻¹,
    with each sample's loss reduced over its tokens as the repair's (``loss_reduction``).
    GA+KL's first step is GA's: the KL and its gradient are 0 at the post-SFT model."""
    lr = 1e-2
    moved = _run(method, tiny_lm, tokenizer, tmp_path, lr=lr, steps=1,
                 loss_reduction=loss_reduction)
    gradient = subset_gradient(tiny_lm, tokenizer, SUBSET, tracked_linear_modules(tiny_lm),
                               max_length=MAX_LENGTH, loss_reduction=loss_reduction)
    before, after = dict(tiny_lm.named_modules()), dict(moved.named_modules())
    for module, g in gradient.items():
        layer, new = before[module], after[module]
        torch.testing.assert_close(new.weight - layer.weight,
                                   lr * g[:, :layer.weight.shape[1]], rtol=1e-4, atol=1e-7)
        if layer.bias is not None:
            torch.testing.assert_close(new.bias - layer.bias, lr * g[:, -1], rtol=1e-4,
                                       atol=1e-7)


def test_ga_raises_the_subset_loss(tiny_lm, tokenizer, tmp_path) -> None:
    base = _subset_loss(tiny_lm, tokenizer)
    moved = _run("ga", tiny_lm, tokenizer, tmp_path, lr=1e-3, steps=1)
    assert _subset_loss(moved, tokenizer) > base


def test_sga_is_seeded(tiny_lm, tokenizer, tmp_path) -> None:
    runs = [_state(_run("sga", tiny_lm, tokenizer, tmp_path, steps=3, seed=seed))
            for seed in (0, 0, 1)]
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])
    assert any(not torch.equal(runs[0][n], runs[2][n]) for n in runs[0])


@pytest.mark.parametrize("method", ["ga", "sga", "ga_kl"])
def test_a_runs_first_steps_are_the_shorter_run(method, tiny_lm, tokenizer, tmp_path) -> None:
    """What lets step 05 train a grid's lr once for all its step counts: bit for bit."""
    seen = {}
    _run(method, tiny_lm, tokenizer, tmp_path, steps=3,
         on_step=lambda n, trained: seen.setdefault(n, _state(trained)))
    assert sorted(seen) == [1, 2, 3]
    for n in (1, 2):
        alone = _state(_run(method, tiny_lm, tokenizer, tmp_path, steps=n))
        assert all(torch.equal(alone[name], seen[n][name]) for name in alone)
    assert any(not torch.equal(seen[1][name], seen[2][name]) for name in seen[1])


def test_zero_kl_weight_is_ga(tiny_lm, tokenizer, tmp_path) -> None:
    ga = _state(_run("ga", tiny_lm, tokenizer, tmp_path, steps=3))
    ga_kl = _state(_run("ga_kl", tiny_lm, tokenizer, tmp_path, steps=3, kl_weight=0.0))
    assert all(torch.equal(ga[n], ga_kl[n]) for n in ga)


def test_the_mean_loss_takes_a_smaller_step_than_the_sum(tiny_lm, tokenizer, tmp_path) -> None:
    """The token mean divides each sample's gradient by its response length (4-8 tokens
    here): GA and GA+KL follow ``loss_reduction``, they do not always ascend the sum."""
    original = _state(tiny_lm)
    for method in ("ga", "ga_kl"):
        moved = {reduction: _state(_run(method, tiny_lm, tokenizer, tmp_path, steps=2,
                                        loss_reduction=reduction))
                 for reduction in ("sum", "mean")}
        size = {reduction: sum(float((state[n] - original[n]).norm()) for n in original)
                for reduction, state in moved.items()}
        assert size["mean"] < 0.5 * size["sum"], (method, size)


def test_kl_weight_holds_the_retained_distribution(tiny_lm, tokenizer, tmp_path) -> None:
    drift = {weight: _retain_kl(tiny_lm, _run("ga_kl", tiny_lm, tokenizer, tmp_path, lr=0.05,
                                              steps=8, kl_weight=weight), tokenizer)
             for weight in (0.0, 30.0)}
    assert drift[30.0] < 0.8 * drift[0.0], drift


def test_dpo_prefers_chosen_on_its_pairs_and_is_seeded(tiny_lm, tokenizer, tmp_path) -> None:
    def margin(model) -> float:
        kwargs = {"max_length": MAX_LENGTH, "normalized": False, "add_eos": True}
        chosen = sequence_logprobs(model, tokenizer, PAIRS["prompt"], PAIRS["chosen"], **kwargs)
        rejected = sequence_logprobs(model, tokenizer, PAIRS["prompt"], PAIRS["rejected"],
                                     **kwargs)
        return float((chosen - rejected).mean())

    moved = _run("dpo", tiny_lm, tokenizer, tmp_path, steps=5)
    assert margin(moved) > margin(tiny_lm) + 0.5
    again = _run("dpo", tiny_lm, tokenizer, tmp_path, steps=5)
    assert all(torch.equal(p, q) for p, q in
               zip(moved.state_dict().values(), again.state_dict().values(), strict=True))


@pytest.mark.parametrize(("method", "overrides", "match"), [
    ("ga", {"lr": 0.0}, "lr must be > 0"),
    ("dpo", {"lr": -1.0}, "lr must be > 0"),
    ("ga", {"steps": 0}, "steps must be >= 1"),
    ("sga", {"batch_size": 0}, "batch_size must be >= 1"),
    ("dpo", {"batch_size": 0}, "batch_size must be >= 1"),
    ("ga", {"modules": []}, "modules is empty"),
    ("ga_kl", {"modules": ["model.nowhere.q_proj"]}, "not linear modules"),
    ("ga", {"subset": SUBSET.select([])}, "subset is empty"),
    ("ga", {"subset": SUBSET.remove_columns("response")}, "lacks the columns"),
    ("ga_kl", {"kl_weight": -1.0}, "kl_weight must be >= 0"),
    ("ga_kl", {"retain": RETAIN.select([])}, "retain is empty"),
    ("dpo", {"beta": 0.0}, "beta must be > 0"),
    ("dpo", {"pairs": PAIRS.select([])}, "pairs is empty"),
    ("dpo", {"pairs": PAIRS.remove_columns("rejected")}, "lacks the columns"),
])
def test_bad_inputs_fail_before_compute(method, overrides, match, tiny_lm, tokenizer, tmp_path,
                                        monkeypatch) -> None:
    def computed(*args, **kwargs):
        raise AssertionError("computed before checking the inputs")

    monkeypatch.setattr(baselines, "_trainable_copy", computed)
    monkeypatch.setattr(baselines, "encode_dialogues", computed)
    with pytest.raises(ValueError, match=match):
        _run(method, tiny_lm, tokenizer, tmp_path, **overrides)


def test_dpo_projects_only_scored_positions_and_trains_as_trl_does(tiny_lm, tokenizer,
                                                                   tmp_path,
                                                                   monkeypatch) -> None:
    fused = trl.trainer.utils._ChunkedLogProbFunction
    projected: list[tuple[int, int]] = []  # (rows through the head, scored rows) per call

    class Recording(fused):
        @staticmethod
        def forward(ctx, hidden, weight, bias, labels, *rest):
            projected.append((hidden.shape[0], int((labels != IGNORE).sum())))
            return fused.forward(ctx, hidden, weight, bias, labels, *rest)

    monkeypatch.setattr(trl.trainer.utils, "_ChunkedLogProbFunction", Recording)
    decides = trl.trainer.utils._use_triton
    compact = _state(_run("dpo", tiny_lm, tokenizer, tmp_path))
    assert trl.trainer.utils._use_triton is decides
    assert projected and all(rows == scored for rows, scored in projected)
    # TRL's own CPU path: every position, prompt and padding included.
    every = projected.copy()
    projected.clear()
    monkeypatch.setattr(baselines, "_compact_lm_head", contextlib.nullcontext)
    whole = _state(_run("dpo", tiny_lm, tokenizer, tmp_path))
    assert sum(r for r, _ in projected) > 2 * sum(r for r, _ in every)
    for name in whole:
        torch.testing.assert_close(compact[name], whole[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", list(METHODS))
def test_training_through_the_prefix_cache_gives_the_same_model(method, tiny_lm, tokenizer,
                                                                tmp_path) -> None:
    cache = PrefixCache(tiny_lm, len(decoder_blocks(tiny_lm)) - 1)
    plain = _state(_run(method, tiny_lm, tokenizer, tmp_path))
    trained = _run(method, tiny_lm, tokenizer, tmp_path, cache=cache)
    cached = _state(trained)
    assert cache.misses > 0
    # DPO's decoders read the cache only while TRL trains: the model returned runs whole.
    assert "forward" not in vars(trained.base_model)
    moved = [n for n in plain if not torch.equal(plain[n], tiny_lm.state_dict()[n])]
    assert moved
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name], rtol=1e-5, atol=1e-6)


def test_a_cache_above_a_trained_block_is_refused(tiny_lm, tokenizer, tmp_path) -> None:
    cache = PrefixCache(tiny_lm, len(decoder_blocks(tiny_lm)) - 1)
    with pytest.raises(ValueError, match="prefix cache ends at block"):
        _run("ga", tiny_lm, tokenizer, tmp_path, cache=cache,
             modules=tracked_linear_modules(tiny_lm, 2))
