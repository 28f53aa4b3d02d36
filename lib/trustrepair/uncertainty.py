"""Confidence intervals on the tables' changes: a paired bootstrap over test items.

Both models of a comparison are scored on the same test triples (or HH dialogues), so
their per-item values are paired: an item that is hard for the post-SFT model is hard
for the repaired one too. Each resample draws items with replacement and uses the same
draw for both models, so the interval reflects the noise in the *change*, not in each
level. Every statistic is recomputed on each resample from the resampled sums of the
items' values (a mean, or perplexity's token-weighted ratio), and the interval is the
percentile interval of those recomputed values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def paired_bootstrap(post: ArrayLike, ours: ArrayLike,
                     statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     bootstrap: Bootstrap) -> Interval:
    """Percentile interval of ``statistic`` over resamples drawn once for both models.

    ``post`` and ``ours`` hold per-item values of the same items in the same order, [n] or
    [n, k] (k quantities per item, e.g. summed NLL and token count). ``statistic`` maps
    the resampled sums of both, [resamples, k] each, to one value per resample.
    """
    post_items, ours_items = _as_items(post), _as_items(ours)
    if post_items.shape != ours_items.shape:
        raise ValueError(f"a paired bootstrap needs the same items for both models, not "
                         f"{post_items.shape[0]} and {ours_items.shape[0]}")
    counts = resample_counts(len(post_items), bootstrap.resamples, bootstrap.seed)
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


def logodds_change(post: Sequence[float], ours: Sequence[float],
                   bootstrap: Bootstrap) -> tuple[Interval, Interval]:
    """Intervals of ΔF_j = F_ours − F_post and of the paper's relative change (%) of F_j.

    ``post`` and ``ours`` are the per-triple log-odds log P(o|m) − log P(p|m) of the same
    triples; F_j is their mean, recomputed on each resample for both models. Both
    intervals come from the same resamples (the same seed).
    """
    n = len(post)

    def delta(p: np.ndarray, o: np.ndarray) -> np.ndarray:
        return (o[:, 0] - p[:, 0]) / n

    def relative(p: np.ndarray, o: np.ndarray) -> np.ndarray:
        return relative_change(p[:, 0] / n, o[:, 0] / n)

    return (paired_bootstrap(post, ours, delta, bootstrap),
            paired_bootstrap(post, ours, relative, bootstrap))


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
