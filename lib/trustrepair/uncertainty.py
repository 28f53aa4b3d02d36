"""Confidence intervals on the tables' changes: a paired bootstrap over test items.

Both models of a comparison are scored on the same test triples (or HH dialogues), so
their per-item values are paired: an item that is hard for the post-SFT model is hard
for the repaired one too. Each resample draws items with replacement and uses the same
draw for both models, so the interval reflects the noise in the *change*, not in each
level. Every statistic is recomputed on each resample from the resampled sums of the
items' values (a mean, or perplexity's token-weighted ratio), and the interval is the
percentile interval of those recomputed values.

Test triples are not independent: the bias triples of one topic and target group share
their sentences, and so on (a triple's ``group``, the unit that never straddles train and
test). Given each item's unit (``clusters``), a resample draws *units* with replacement and
takes every item of a drawn unit, so that the interval does not count nine near-copies as
nine observations. A mean is then the resampled sum over the resampled count of items.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from trustrepair.params import Params


@dataclass(frozen=True)
class Bootstrap:
    """How the resamples are drawn: ``eval.bootstrap_resamples``, ``eval.confidence`` and
    the run's ``seed``."""

    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval [low, high]."""

    low: float
    high: float


def bootstrap_of(params: Params) -> Bootstrap:
    """The run's interval settings: ``eval.bootstrap_resamples``, ``eval.confidence`` and
    ``data.seed``, which stays fixed across seeds so that every seed draws the same resamples."""
    return Bootstrap(params.eval.bootstrap_resamples, params.eval.confidence, params.data.seed)


def relative_change(post: float | np.ndarray, ours: float | np.ndarray) -> float | np.ndarray:
    """The paper's relative change, 100 · (Post − Ours) / |Post|: positive = lower = better.

    Works on floats and on numpy arrays alike (one value per resample).
    """
    return 100 * (post - ours) / abs(post)


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n] item indices, each row n draws with replacement (seeded)."""
    if n < 1:
        raise ValueError("a bootstrap needs at least one test item")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """[resamples, n]: how often each item is drawn in each row of :func:`resample_indices`,
    so that a resample's sum of item values is one matrix product."""
    draws = resample_indices(n, resamples, seed)
    flat = (draws + n * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n)


def cluster_resample_counts(clusters: Sequence[Hashable], resamples: int,
                            seed: int) -> np.ndarray:
    """[resamples, n]: how often each item is drawn when whole units are drawn with
    replacement, every item of a unit as often as its unit. Units are numbered in order of
    first appearance, so with one item per unit this is :func:`resample_counts` itself."""
    numbers: dict[Hashable, int] = {}
    unit_of = np.array([numbers.setdefault(c, len(numbers)) for c in clusters], dtype=np.int64)
    # C order, as resample_counts: the same counts then give the same sums to the last bit.
    return np.ascontiguousarray(resample_counts(len(numbers), resamples, seed)[:, unit_of])


def paired_bootstrap(post: ArrayLike, ours: ArrayLike,
                     statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     bootstrap: Bootstrap,
                     clusters: Sequence[Hashable] | None = None) -> Interval:
    """Percentile interval of ``statistic`` over resamples drawn once for both models.

    ``post`` and ``ours`` hold per-item values of the same items in the same order, [n] or
    [n, k] (k quantities per item, e.g. summed NLL and token count). ``statistic`` maps
    the resampled sums of both, [resamples, k] each, to one value per resample.
    ``clusters``, one unit label per item, draws units instead of items
    (:func:`cluster_resample_counts`); None treats every item as its own unit.
    """
    post_items, ours_items = _as_items(post), _as_items(ours)
    if post_items.shape != ours_items.shape:
        raise ValueError(f"a paired bootstrap needs the same items for both models, not "
                         f"{post_items.shape[0]} and {ours_items.shape[0]}")
    if clusters is None:
        counts = resample_counts(len(post_items), bootstrap.resamples, bootstrap.seed)
    elif len(clusters) != len(post_items):
        raise ValueError(f"a cluster bootstrap needs one unit per item, not {len(clusters)} "
                         f"units for {len(post_items)} items")
    else:
        counts = cluster_resample_counts(clusters, bootstrap.resamples, bootstrap.seed)
    counts = counts.astype(np.float64)
    return _percentile(statistic(counts @ post_items, counts @ ours_items), bootstrap)


def auroc_interval(scores: torch.Tensor, positive: torch.Tensor,
                   bootstrap: Bootstrap) -> Interval:
    """Interval of the AUROC of ``scores`` at telling ``positive`` samples from the rest.

    Positives and negatives are resampled separately, each with replacement and at its
    own size, since their counts are fixed by design (the planted samples), not drawn.
    A resample's AUROC is the count-weighted share of (positive, negative) pairs ranked
    correctly, ties counting one half, which is one product with the pair matrix.
    """
    scores, positive = scores.double(), positive.bool()
    pos, neg = scores[positive].numpy(), scores[~positive].numpy()
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("an AUROC needs both positive and negative samples")
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    pos_counts = resample_counts(len(pos), bootstrap.resamples, bootstrap.seed)
    neg_counts = resample_counts(len(neg), bootstrap.resamples, bootstrap.seed + 1)
    return _percentile(((pos_counts @ wins) * neg_counts).sum(1) / (len(pos) * len(neg)),
                       bootstrap)


def _percentile(values: np.ndarray, bootstrap: Bootstrap) -> Interval:
    """The central ``bootstrap.confidence`` percentile interval of per-resample values."""
    tail = (1 - bootstrap.confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return Interval(float(low), float(high))


def _as_items(values: ArrayLike) -> np.ndarray:
    items = np.asarray(values, dtype=np.float64)
    return items[:, None] if items.ndim == 1 else items


def logodds_change(post: Sequence[float], ours: Sequence[float], bootstrap: Bootstrap,
                   clusters: Sequence[Hashable] | None = None) -> tuple[Interval, Interval]:
    """Intervals of ΔF_j = F_ours − F_post and of the paper's relative change (%) of F_j.

    ``post`` and ``ours`` are the per-triple log-odds log P(o|m) − log P(p|m) of the same
    triples; F_j is their mean, recomputed on each resample for both models (the resampled
    sum over the resampled number of triples, which varies when ``clusters``, the triples'
    units, are drawn). Both intervals come from the same resamples (the same seed).
    """
    ones = np.ones(len(post))
    post_items = np.column_stack([np.asarray(post, dtype=np.float64), ones])
    ours_items = np.column_stack([np.asarray(ours, dtype=np.float64), ones[:len(ours)]])

    def delta(p: np.ndarray, o: np.ndarray) -> np.ndarray:
        return o[:, 0] / o[:, 1] - p[:, 0] / p[:, 1]

    def relative(p: np.ndarray, o: np.ndarray) -> np.ndarray:
        return relative_change(p[:, 0] / p[:, 1], o[:, 0] / o[:, 1])

    return (paired_bootstrap(post_items, ours_items, delta, bootstrap, clusters),
            paired_bootstrap(post_items, ours_items, relative, bootstrap, clusters))


def perplexity_change(post_nll: Sequence[float], post_tokens: Sequence[int],
                      ours_nll: Sequence[float], ours_tokens: Sequence[int],
                      bootstrap: Bootstrap) -> Interval:
    """Interval of the paper's relative change (%) of HH perplexity.

    Per dialogue: the summed response NLL and the number of response tokens (+ EOS). Each
    model's perplexity exp(Σ NLL / Σ tokens) is recomputed on the resampled dialogues, so
    it stays token-weighted as the tables' perplexity is.
    """
    def relative(p: np.ndarray, o: np.ndarray) -> np.ndarray:
        return relative_change(np.exp(p[:, 0] / p[:, 1]), np.exp(o[:, 0] / o[:, 1]))

    return paired_bootstrap(np.column_stack([post_nll, post_tokens]),
                            np.column_stack([ours_nll, ours_tokens]), relative, bootstrap)
