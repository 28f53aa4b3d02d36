"""Response log-probs, F_j and perplexity against hand computations on tiny models."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from datasets import Dataset

from trustrepair import metrics as metrics_module
from trustrepair import shared_prompts
from trustrepair.aspects import ASPECTS
from trustrepair.data.trust import load_trust
from trustrepair.metrics import (
    IGNORE,
    collate,
    encode,
    perplexity,
    response_logprobs,
    response_nll,
    sequence_logprobs,
    trust_logodds,
)

PAIRS = [
    ("what is the capital of the land ?", " the answer is the big city"),
    ("tell me a fact about people", " people are kind"),
    ("the cat", " sat on the mat and the dog ran to the park"),
    ("you are a helpful assistant . tell me a fact about people and the cat", " no"),
    ("the", " dog"),
]


def _by_hand(model, tokenizer, prompt: str, response: str) -> tuple[float, int]:
    """Sum of log P(token | prefix) over the response tokens, from a plain forward pass."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([prompt_ids + response_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0].double(), -1)
    total = sum(logprobs[len(prompt_ids) + k - 1, t].item() for k, t in enumerate(response_ids))
    return total, len(response_ids)


def test_encode_labels_only_the_response(tokenizer) -> None:
    e = encode(tokenizer, "the cat", " sat on the mat", max_length=64, add_eos=True)
    n_prompt = len(tokenizer("the cat")["input_ids"])
    assert e["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert e["labels"][n_prompt:] == e["input_ids"][n_prompt:]
    assert e["input_ids"][-1] == tokenizer.eos_token_id


def test_encode_truncates_the_prompt_from_the_left(tokenizer) -> None:
    long_prompt = " ".join(["the cat sat on the mat"] * 20)
    e = encode(tokenizer, long_prompt, " the dog", max_length=16)
    response = tokenizer(" the dog", add_special_tokens=False)["input_ids"]
    assert len(e["input_ids"]) == 16
    assert e["input_ids"][-len(response):] == response
    assert sum(label != IGNORE for label in e["labels"]) == len(response)


@pytest.mark.parametrize("normalized", [False, True])
def test_sequence_logprobs_match_a_hand_computation(tiny_lm, tokenizer, normalized) -> None:
    got = sequence_logprobs(tiny_lm, tokenizer, *zip(*PAIRS, strict=True), batch_size=3,
                            max_length=128, normalized=normalized)
    for value, (prompt, response) in zip(got, PAIRS, strict=True):
        total, n = _by_hand(tiny_lm, tokenizer, prompt, response)
        assert value.item() == pytest.approx(total / n if normalized else total, rel=1e-6, abs=1e-5)


def test_batched_equals_one_by_one_whatever_the_padding_side(tiny_lm, tokenizer) -> None:
    prompts, responses = zip(*PAIRS, strict=True)
    alone = sequence_logprobs(tiny_lm, tokenizer, prompts, responses, batch_size=1)
    tokenizer.padding_side = "left"
    try:
        together = sequence_logprobs(tiny_lm, tokenizer, prompts, responses, batch_size=5)
    finally:
        tokenizer.padding_side = "right"
    shuffled = [4, 2, 0, 3, 1]
    mixed = sequence_logprobs(tiny_lm, tokenizer, [prompts[i] for i in shuffled],
                              [responses[i] for i in shuffled], batch_size=2)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed, alone[shuffled], atol=1e-5, rtol=0)


def test_trust_logodds_is_opponent_minus_proponent(tiny_lm, tokenizer) -> None:
    triples = Dataset.from_list([
        {"prompt": "tell me a fact about people", "proponent": " people are kind",
         "opponent": " people are bad"},
        {"prompt": "the cat", "proponent": " sat on the mat", "opponent": " ran to the park"},
    ])
    odds = trust_logodds(tiny_lm, tokenizer, triples, batch_size=4)
    for value, row in zip(odds.per_triple, triples, strict=True):
        o = sequence_logprobs(tiny_lm, tokenizer, [row["prompt"]], [row["opponent"]])[0]
        p = sequence_logprobs(tiny_lm, tokenizer, [row["prompt"]], [row["proponent"]])[0]
        # o and p are float32 sums of tens of nats, batched differently: ~1e-6 apart.
        assert value.item() == pytest.approx((o - p).item(), abs=1e-6 * (abs(o) + abs(p)).item())
    assert odds.mean == pytest.approx(odds.per_triple.mean().item())
    assert odds.prefers_proponent == pytest.approx((odds.per_triple < 0).double().mean().item())


def test_perplexity_is_token_weighted_over_responses_and_eos(tiny_lm, tokenizer) -> None:
    dialogues = Dataset.from_list([{"prompt": p, "response": r} for p, r in PAIRS])
    nll, tokens = 0.0, 0
    for prompt, response in PAIRS:
        total, n = _by_hand(tiny_lm, tokenizer, prompt, response + "</s>")
        nll, tokens = nll - total, tokens + n
    assert tokenizer(" x</s>", add_special_tokens=False)["input_ids"][-1] == tokenizer.eos_token_id
    assert perplexity(tiny_lm, tokenizer, dialogues, batch_size=2) == \
        pytest.approx(math.exp(nll / tokens), rel=1e-5)


def test_perplexity_is_recomputable_from_its_per_dialogue_terms(tiny_lm, tokenizer) -> None:
    """Per dialogue, the summed NLL and token count, from which the bootstrap recomputes
    perplexity on each resample; the perplexity itself is the one computed before."""
    dialogues = Dataset.from_list([{"prompt": p, "response": r} for p, r in PAIRS])
    scored = response_nll(tiny_lm, tokenizer, dialogues, batch_size=2)
    for nll, n, (prompt, response) in zip(scored.nll, scored.tokens, PAIRS, strict=True):
        total, count = _by_hand(tiny_lm, tokenizer, prompt, response + "</s>")
        assert nll.item() == pytest.approx(-total, rel=1e-5) and n.item() == count
    totals = sequence_logprobs(tiny_lm, tokenizer, *zip(*PAIRS, strict=True), batch_size=2,
                               normalized=False, add_eos=True)
    before = float(torch.exp(-totals.sum() / scored.tokens.sum()))  # perplexity's formula
    assert perplexity(tiny_lm, tokenizer, dialogues, batch_size=2) == before
    assert scored.perplexity == before


def test_evaluate_saves_the_per_item_values_of_both_metrics(tiny_lm, tokenizer) -> None:
    from trustrepair.evaluation import evaluate
    from trustrepair.params import EvalParams

    triples = Dataset.from_list([
        {"id": "t-0", "group": "people", "prompt": "tell me a fact about people",
         "proponent": " people are kind", "opponent": " people are bad"},
        {"id": "t-1", "group": "cat", "prompt": "the cat", "proponent": " sat on the mat",
         "opponent": " ran to the park"}])
    dialogues = Dataset.from_list([{"id": f"hh-{i}", "prompt": p, "response": r}
                                   for i, (p, r) in enumerate(PAIRS)])
    result = evaluate(tiny_lm, tokenizer, {"truthfulness": triples}, dialogues,
                      EvalParams(batch_size=2))
    assert result["aspects"]["truthfulness"]["ids"] == ["t-0", "t-1"]
    assert result["aspects"]["truthfulness"]["groups"] == ["people", "cat"], "bootstrap units"
    assert len(result["aspects"]["truthfulness"]["per_triple"]) == 2
    assert result["ppl_ids"] == [f"hh-{i}" for i in range(len(PAIRS))]
    assert result["ppl"] == perplexity(tiny_lm, tokenizer, dialogues, batch_size=2)
    assert math.exp(sum(result["ppl_nll"]) / sum(result["ppl_tokens"])) == pytest.approx(
        result["ppl"], rel=1e-6)


def test_response_logprobs_are_differentiable(tiny_lm, tokenizer) -> None:
    batch = collate([encode(tokenizer, p, r, 64) for p, r in PAIRS[:2]], tokenizer.pad_token_id)
    lp, n = response_logprobs(tiny_lm, batch)
    lp.sum().backward()
    grads = [p.grad for p in tiny_lm.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    assert (n > 0).all()
    tiny_lm.zero_grad(set_to_none=True)


def test_pooled_features_do_not_depend_on_the_batch(tiny_lm, tokenizer) -> None:
    from trustrepair.features import mean_pooled_hidden_states

    dialogues = Dataset.from_list([{"prompt": p, "response": r} for p, r in PAIRS])
    alone = mean_pooled_hidden_states(tiny_lm, tokenizer, dialogues, max_length=64, batch_size=1)
    together = mean_pooled_hidden_states(tiny_lm, tokenizer, dialogues, max_length=64,
                                         batch_size=5)
    assert alone.shape == (len(PAIRS), tiny_lm.config.hidden_size)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_pooled_features_are_the_causal_lms_final_hidden_states(tiny_lm, tokenizer) -> None:
    """The decoder alone (no LM head) gives the full model's last hidden state."""
    from trustrepair.features import mean_pooled_hidden_states

    prompt, response = PAIRS[0]
    dialogues = Dataset.from_list([{"prompt": prompt, "response": response}])
    ids = encode(tokenizer, prompt, response, 64, add_eos=True)
    hidden = tiny_lm(input_ids=torch.tensor([ids["input_ids"]]),
                     output_hidden_states=True).hidden_states[-1][0]
    pooled = mean_pooled_hidden_states(tiny_lm, tokenizer, dialogues, max_length=64)
    torch.testing.assert_close(pooled[0], hidden.mean(0), atol=1e-6, rtol=1e-6)


def _scored_alone(model, tokenizer, prompts, responses) -> torch.Tensor:
    """Each sequence in a batch of its own, prompt included: scoring before any sharing."""
    values = []
    for prompt, response in zip(prompts, responses, strict=True):
        batch = collate([encode(tokenizer, prompt, response, max_length=256)],
                        tokenizer.pad_token_id)
        with torch.no_grad():
            values.append(response_logprobs(model, batch)[0].double())
    return torch.cat(values)


@pytest.mark.parametrize("aspect", list(ASPECTS))
def test_each_aspect_scores_as_if_every_sequence_ran_alone(tiny_lm, tokenizer, fixture_data,
                                                           aspect, monkeypatch) -> None:
    """Distinct sequences scored once and repeated prompts run once change no value: the
    fixture triples, with some triples twice and extra responses on a shared prompt. In
    float64, so that what is compared is the computation, not float32 rounding."""
    model = copy.deepcopy(tiny_lm).double()
    triples = load_trust(aspect, fixture_data, verify=False)
    rows = [*triples.select(range(min(12, len(triples)))), *triples.select(range(3))]
    shared = rows[0]["prompt"]
    rows += [{"prompt": shared, "proponent": " people are kind", "opponent": rows[1]["opponent"]},
             {"prompt": shared, "proponent": rows[0]["proponent"], "opponent": " the cat"}]
    data = Dataset.from_list([{k: r[k] for k in ("prompt", "proponent", "opponent")}
                              for r in rows])
    prompted = shared_prompts.response_logits_on_shared_prompts
    ran = []
    monkeypatch.setattr(metrics_module, "response_logits_on_shared_prompts",
                        lambda *a, **kw: ran.append(len(a[1])) or prompted(*a, **kw))
    got = trust_logodds(model, tokenizer, data, batch_size=4).per_triple
    assert ran and ran[0] >= 4  # the repeated prompts did go through the shared path
    expected = (_scored_alone(model, tokenizer, data["prompt"], data["opponent"])
                - _scored_alone(model, tokenizer, data["prompt"], data["proponent"]))
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_distinct_sequences_are_scored_once(tiny_lm, tokenizer, monkeypatch) -> None:
    prompts, responses = zip(*PAIRS, strict=True)
    scored = []
    plain = metrics_module.response_logprobs
    monkeypatch.setattr(metrics_module, "can_share_prompts", lambda model: False)
    monkeypatch.setattr(metrics_module, "response_logprobs",
                        lambda model, batch, normalized: scored.append(len(batch["input_ids"]))
                        or plain(model, batch, normalized))
    twice = sequence_logprobs(tiny_lm, tokenizer, prompts * 3, responses * 3, batch_size=4)
    assert sum(scored) == len(PAIRS)
    torch.testing.assert_close(twice, _scored_alone(tiny_lm, tokenizer, prompts * 3,
                                                    responses * 3), atol=1e-6, rtol=0)


def test_perplexity_terms_are_unchanged_by_shared_prompts(tiny_lm, tokenizer) -> None:
    """HH dialogues with a repeated prompt (and EOS): each dialogue's NLL as alone."""
    dialogues = Dataset.from_list([{"prompt": p, "response": r} for p, r in PAIRS]
                                  + [{"prompt": PAIRS[0][0], "response": " no"}])
    nll = response_nll(tiny_lm, tokenizer, dialogues, batch_size=3)
    for value, row in zip(nll.nll, dialogues, strict=True):
        total, _ = _by_hand(tiny_lm, tokenizer, row["prompt"], row["response"] + "</s>")
        assert value.item() == pytest.approx(-total, rel=1e-6, abs=1e-5)
