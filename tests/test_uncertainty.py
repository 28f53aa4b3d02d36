"""Paired bootstrap intervals on the tables' changes, against cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trustrepair.planted import auroc
from trustrepair.uncertainty import (
    Bootstrap,
    Interval,
    auroc_interval,
    cluster_resample_counts,
    logodds_change,
    paired_bootstrap,
    perplexity_change,
    relative_change,
    resample_counts,
    resample_indices,
)

B = Bootstrap(resamples=2000, confidence=0.95, seed=0)
RNG = np.random.default_rng(7)
POST = RNG.normal(0.3, 0.5, 150)
"""Per-triple log-odds of a post-SFT model: mean well away from 0."""
NLL_PER_TOKEN = RNG.uniform(1.5, 3.5, 80)
TOKENS = RNG.integers(5, 60, 80)
POST_NLL = NLL_PER_TOKEN * TOKENS


def test_identical_models_give_a_zero_width_interval_at_zero() -> None:
    delta, relative = logodds_change(POST, POST.copy(), B)
    ppl = perplexity_change(POST_NLL, TOKENS, POST_NLL.copy(), TOKENS, B)
    for interval in (delta, relative, ppl):
        assert (interval.low, interval.high) == (0.0, 0.0)


def test_a_constant_shift_of_every_triple_shifts_delta_f_by_exactly_that() -> None:
    c = 0.125
    delta, _ = logodds_change(POST, POST + c, B)
    assert delta.low == pytest.approx(c, abs=1e-12) and delta.high == pytest.approx(c, abs=1e-12)
    # With the same value on every post-SFT triple, F_post is that value on every
    # resample, so the relative change is one number: 100 (2 - 2.125) / 2 = -6.25.
    flat = np.full(150, 2.0)
    delta, relative = logodds_change(flat, flat + c, B)
    assert (delta.low, delta.high) == pytest.approx((c, c), abs=1e-12)
    assert (relative.low, relative.high) == pytest.approx((-6.25, -6.25), abs=1e-9)


def test_perplexity_scaled_by_a_known_factor() -> None:
    # The same per-token NLL a on every dialogue: perplexity e^a on every resample. NLLs
    # scaled by s give e^(s a): relative change 100 (1 - e^((s-1) a)), whatever the draw.
    a, s = 2.0, 0.9
    nll = a * TOKENS
    ppl = perplexity_change(nll, TOKENS, s * nll, TOKENS, B)
    expected = 100 * (1 - math.exp((s - 1) * a))
    assert (ppl.low, ppl.high) == pytest.approx((expected, expected), rel=1e-9)
    # Adding d nats to every token multiplies perplexity by e^d on any resample.
    d = 0.05
    ppl = perplexity_change(POST_NLL, TOKENS, POST_NLL + d * TOKENS, TOKENS, B)
    expected = 100 * (1 - math.exp(d))
    assert (ppl.low, ppl.high) == pytest.approx((expected, expected), rel=1e-9)


def test_perplexity_is_token_weighted_on_each_resample() -> None:
    """The vectorised interval equals one computed resample by resample from the indices."""
    ours = POST_NLL * RNG.uniform(0.9, 1.05, 80)
    got = perplexity_change(POST_NLL, TOKENS, ours, TOKENS, B)
    values = []
    for draw in resample_indices(80, B.resamples, B.seed):
        post_ppl = math.exp(POST_NLL[draw].sum() / TOKENS[draw].sum())
        ours_ppl = math.exp(ours[draw].sum() / TOKENS[draw].sum())
        values.append(relative_change(post_ppl, ours_ppl))
    low, high = np.quantile(values, [0.025, 0.975])
    assert (got.low, got.high) == pytest.approx((low, high), rel=1e-9)
    point = relative_change(math.exp(POST_NLL.sum() / TOKENS.sum()),
                            math.exp(ours.sum() / TOKENS.sum()))
    assert got.low < point < got.high


def test_the_interval_contains_the_point_estimate() -> None:
    ours = POST - 0.05 + RNG.normal(0, 0.2, 150)
    delta, relative = logodds_change(POST, ours, B)
    assert delta.low < ours.mean() - POST.mean() < delta.high
    assert relative.low < relative_change(POST.mean(), ours.mean()) < relative.high


def test_the_seed_fixes_the_interval() -> None:
    ours = POST + RNG.normal(0, 0.3, 150)
    first = logodds_change(POST, ours, B)
    assert logodds_change(POST, ours, B) == first
    other = logodds_change(POST, ours, Bootstrap(B.resamples, B.confidence, seed=1))
    assert other != first


def test_resample_counts_are_the_index_matrix_counted() -> None:
    draws = resample_indices(30, 50, seed=3)
    counts = resample_counts(30, 50, seed=3)
    assert counts.shape == (50, 30) and (counts.sum(1) == 30).all()
    for row, draw in zip(counts, draws, strict=True):
        assert (row == np.bincount(draw, minlength=30)).all()


def test_the_resample_is_paired() -> None:
    """Items vary far more than the change between models: pairing removes that spread."""
    ours = POST - 0.02 + RNG.normal(0, 0.01, 150)
    delta, _ = logodds_change(POST, ours, B)
    # Paired: the interval of ΔF is that of the per-triple differences alone.
    alone = paired_bootstrap(np.zeros(150), ours - POST, lambda p, o: o[:, 0] / 150, B)
    assert (delta.low, delta.high) == pytest.approx((alone.low, alone.high), abs=1e-12)
    # Unpaired: each model's triples drawn on their own, the spread of the items dominates.
    post_means = POST[resample_indices(150, B.resamples, seed=1)].mean(1)
    ours_means = ours[resample_indices(150, B.resamples, seed=2)].mean(1)
    low, high = np.quantile(ours_means - post_means, [0.025, 0.975])
    assert (high - low) > 20 * (delta.high - delta.low)
    assert delta.high < 0 < high, "paired, the change is clear; unpaired, it is not"


def test_units_of_near_copies_widen_the_interval_and_single_items_change_nothing() -> None:
    """10 units of 9 items with one value each: as 90 independent items the interval
    counts each value nine times over; drawn by unit it is as wide as 10 items allow."""
    changes = RNG.normal(-0.05, 0.2, 10)
    post = np.repeat(RNG.normal(0.3, 0.5, 10), 9)
    ours = post + np.repeat(changes, 9)
    units = np.repeat([f"topic-{u}" for u in range(10)], 9).tolist()
    iid, _ = logodds_change(post, ours, B)
    clustered, _ = logodds_change(post, ours, B, clusters=units)
    assert clustered.high - clustered.low > 2 * (iid.high - iid.low), "about √9 = 3 times"
    alone = logodds_change(post, ours, B, clusters=[f"item-{i}" for i in range(90)])
    assert alone == logodds_change(post, ours, B), "one item per unit: the i.i.d. resamples"
    # Drawn by unit, the 10 values are resampled as 10 items would be.
    ten, _ = logodds_change(post[::9], ours[::9], B)
    assert (clustered.low, clustered.high) == pytest.approx((ten.low, ten.high), abs=1e-12)


def test_a_drawn_unit_brings_all_its_items_and_a_mean_divides_by_their_count() -> None:
    units = ["a", "a", "a", "b", "c", "c"]
    counts = cluster_resample_counts(units, 200, seed=4)
    assert (counts[:, 0] == counts[:, 1]).all() and (counts[:, 4] == counts[:, 5]).all()
    assert set(np.unique(counts.sum(1))) > {6}, "units of unequal size: the count varies"
    # Units of unequal size: F_j of a resample is its sum over its number of triples, so a
    # model that adds c to every triple changes F_j by exactly c whatever the draw.
    post = np.array([0.1, 0.2, 0.3, 1.0, -0.5, 0.4])
    delta, _ = logodds_change(post, post + 0.25, B, clusters=units)
    assert (delta.low, delta.high) == pytest.approx((0.25, 0.25), abs=1e-12)
    with pytest.raises(ValueError, match="one unit per item"):
        logodds_change(post, post, B, clusters=units[:-1])


def test_the_two_models_must_score_the_same_items() -> None:
    with pytest.raises(ValueError, match="same items"):
        logodds_change(POST, POST[:-1], B)


def test_auroc_interval_of_a_perfect_ranker_is_one_and_contains_the_estimate() -> None:
    positive = torch.tensor([True] * 10 + [False] * 300)
    perfect = positive.double() + torch.rand(310, generator=torch.Generator().manual_seed(0))
    assert auroc_interval(perfect, positive, Bootstrap()) == Interval(1.0, 1.0)

    noisy = positive.double() * 0.5 + torch.rand(310, generator=torch.Generator().manual_seed(1))
    interval = auroc_interval(noisy, positive, Bootstrap(resamples=4000))
    assert interval.low < auroc(noisy, positive) < interval.high
    assert 0.05 < interval.high - interval.low < 0.5, "10 positives leave a wide interval"
    assert auroc_interval(noisy, positive, Bootstrap(resamples=4000)) == interval


def test_auroc_interval_of_tied_scores_is_one_half() -> None:
    positive = torch.tensor([True, True, False, False, False])
    assert auroc_interval(torch.zeros(5), positive, Bootstrap()) == Interval(0.5, 0.5)
    with pytest.raises(ValueError, match="both positive and negative"):
        auroc_interval(torch.zeros(3), torch.zeros(3, dtype=torch.bool), Bootstrap())
