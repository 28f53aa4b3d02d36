"""Subset selection: a small, diverse set of detrimental samples (paper eq. 7, sec. 3.5, app. E).

Given N candidate training samples with features x_i (final-layer embeddings) and detrimental
scores (higher = more harmful to the trust metric), pick at most k of them:

    S* = argmax_{|S| <= k} T(S)
    T(S) = log det(K_S + I) + eta * log(1 + sum_{i in S} gamma_hat_i)                  (eq. 7)

- K_ij = exp(-gamma ||x_i - x_j||^2) is the RBF kernel and K_S its S x S block: the first term
  is the (log) volume S spans, large when S holds no near-duplicates. The "+ I" keeps it
  monotone (app. E.3). gamma defaults to the median heuristic, see :func:`rbf_gamma`.
- gamma_hat are the scores min-max normalised to [0, 1] (app. E.4), and the influence of S is
  taken as the sum of its samples' scores, so the second term is a concave function of a
  non-negative sum: monotone submodular. The paper writes log(sum); the "1 +" makes
  T(empty set) = 0 instead of log 0, and keeps every gain finite.
- eta trades the two off: eta = 0 is pure diversity, eta -> inf tends to the top-k scores.

T is monotone submodular, so greedy selection, adding the item with the largest marginal
gain k times, is within (1 - 1/e) of the optimum (Nemhauser et al., app. E.5).

Greedy is exact and fast with an incremental Cholesky factor (Chen, Zhang & Zhou, "Fast Greedy
MAP Inference for Determinantal Point Processes", NeurIPS 2018), here for L = K + I. With S
picked and L_S = V V^T, each item i keeps c_i (V c_i = L_{S,i}) and

    log det(L_{S+i}) - log det(L_S) = log d_i^2,     d_i^2 = L_ii - ||c_i||^2,

so the diversity gain of every item is one log. Adding item j appends one entry to every c_i,

    e_i = (K_ji - <c_j, c_i>) / d_j,     d_i^2 <- d_i^2 - e_i^2,

which needs only row j of K: O(N (D + k)) per step, O(N k) memory, never the N x N kernel.
d_i^2 starts at L_ii = 2 and never drops below 1 (it is 1 + a Schur complement of K), so no
step divides by a small number. The score term's gain is eta * log1p(gamma_hat_i / (1 + s)),
s the sum of gamma_hat over S.

Speed: reading the N x D features for a kernel row dominates, so rows are computed in float32
on centred features (squared distance = |x_i|^2 - 2 x_i.x_j + |x_j|^2, clipped at 0), and one
pass over the features computes the current pick's row together with those of the SPECULATE
items with the highest current gains; the next pick is usually among them, and cached rows
cost nothing. That changes how often the features are read, not the rows or the picks.
Float32 rows carry ~1e-7 error, so gains within TIE_TOL of the best count as tied, and ties go
to the lowest index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

TIE_TOL = 1e-6  # gains this close to the best are ties; float32 kernel rows are good to ~1e-7
MEDIAN_SAMPLE = 1000  # rows for the median heuristic: ~500k pairs, O(N) for any N
SPECULATE = 16  # extra kernel rows computed per pass over the features (likely next picks)
_CHUNK = 8192  # rows per block when copying features, so temporaries stay small


# ----------------------------------------------------------------------------- inputs

def _to_numpy(a: Any) -> np.ndarray:
    """A float numpy array from an array or a torch tensor (no torch import for numpy input)."""
    if hasattr(a, "detach") and hasattr(a, "numpy"):
        import torch

        a = a.detach().cpu()
        if a.dtype not in (torch.float32, torch.float64):
            a = a.double()
        return a.numpy()
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


def _features(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """The features as a float array, and their column means (the validation pass)."""
    x = _to_numpy(features)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D (N, D) array, got shape {x.shape}")
    mean = x.mean(axis=0)  # a NaN or inf anywhere makes its column's mean non-finite
    if not np.isfinite(mean).all():
        if not np.isfinite(x).all():
            raise ValueError("features contain NaN or inf")
        mean = x.mean(axis=0, dtype=np.float64)  # finite, but a float32 sum overflowed
        if not np.isfinite(mean).all():
            raise ValueError("features are too large: their column sums overflow float64")
    return x, mean


def _scores(scores: Any, n: int) -> np.ndarray:
    s = _to_numpy(scores).astype(np.float64, copy=False)
    if s.ndim != 1:
        raise ValueError(f"scores must be a 1-D (N,) array, got shape {s.shape}")
    if len(s) != n:
        raise ValueError(f"features has N={n} rows but scores has {len(s)} entries")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or inf")
    return s


def _check_k(k: int, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise ValueError(f"subset size k must be an integer, got {k!r}")
    if k <= 0:
        raise ValueError(f"subset size k must be positive, got k={k}")
    if k > n:
        raise ValueError(f"subset size k={k} is larger than the N={n} candidates")
    return int(k)


def _check_eta(eta: float) -> float:
    if not np.isfinite(eta) or eta < 0:
        raise ValueError(f"eta must be a finite number >= 0, got eta={eta}")
    return float(eta)


def _check_gamma(gamma: float | None) -> float | None:
    if gamma is not None and (not np.isfinite(gamma) or gamma <= 0):
        raise ValueError(f"gamma must be a finite number > 0, got gamma={gamma}")
    return None if gamma is None else float(gamma)


# ----------------------------------------------------------------------------- K, gamma_hat, T

def rbf_gamma(features: Any, gamma: float | None = None) -> float:
    """The RBF bandwidth: ``gamma`` itself when given, else the median heuristic.

    Median heuristic: gamma = 1 / median of the pairwise squared distances, so a typical pair
    has K_ij ~ exp(-1) whatever the scale of the features. The median is taken over all pairs
    of a seeded random sample of at most MEDIAN_SAMPLE rows (all rows when N is smaller), so
    it costs O(N) and is the same number in every call on the same features. If over half the
    sampled pairs coincide, the median of the non-zero distances is used; if all coincide,
    gamma = 1 (K is then all ones for any gamma).
    """
    gamma = _check_gamma(gamma)
    return _median_gamma(_features(features)[0]) if gamma is None else gamma


def _median_gamma(x: np.ndarray) -> float:
    n = len(x)
    if n < 2:
        return 1.0
    rows = np.arange(n)
    if n > MEDIAN_SAMPLE:
        rows = np.sort(np.random.default_rng(0).choice(n, MEDIAN_SAMPLE, replace=False))
    sub = x[rows].astype(np.float64)
    sub -= sub.mean(axis=0)
    sq = np.einsum("ij,ij->i", sub, sub)
    dist = sq[:, None] + sq[None, :] - 2.0 * (sub @ sub.T)
    pairs = np.maximum(dist[np.triu_indices(len(sub), 1)], 0.0)
    median = float(np.median(pairs))
    if median <= 0:
        positive = pairs[pairs > 0]
        median = float(np.median(positive)) if len(positive) else 1.0
    return 1.0 / median


def normalised_scores(scores: Any) -> np.ndarray:
    """gamma_hat: scores min-max normalised to [0, 1] (app. E.4); constant scores give zeros."""
    s = _to_numpy(scores).astype(np.float64, copy=False)
    if s.ndim != 1 or not np.isfinite(s).all():
        raise ValueError("scores must be a finite 1-D array")
    if len(s) == 0:
        return s.copy()
    lo, hi = s.min(), s.max()
    return (s - lo) / (hi - lo) if hi > lo else np.zeros_like(s)


def objective(features: Any, scores: Any, subset: Sequence[int], eta: float,
              gamma: float | None = None) -> float:
    """T(S) of eq. 7 from scratch, with gamma_hat normalised over all N candidates."""
    eta, gamma = _check_eta(eta), _check_gamma(gamma)
    x, _ = _features(features)
    s = _scores(scores, len(x))
    idx = np.asarray(list(subset), dtype=np.int64)
    if len(idx) and (idx.min() < 0 or idx.max() >= len(x)):
        raise ValueError(f"subset indices must lie in [0, {len(x)})")
    if len(np.unique(idx)) != len(idx):
        raise ValueError("subset has repeated indices")
    if len(idx) == 0:
        return 0.0
    g = _median_gamma(x) if gamma is None else gamma
    xs = x[idx].astype(np.float64)
    xs -= xs.mean(axis=0)
    sq = np.einsum("ij,ij->i", xs, xs)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (xs @ xs.T), 0.0)
    np.fill_diagonal(dist, 0.0)
    _, logdet = np.linalg.slogdet(np.exp(-g * dist) + np.eye(len(idx)))
    return float(logdet + eta * np.log1p(normalised_scores(s)[idx].sum()))


# ----------------------------------------------------------------------------- greedy MAP

class _KernelRows:
    """Rows of K on demand. One pass over the features computes the requested row and the rows
    of the SPECULATE unpicked items with the highest current gains, which are cached: the next
    pick is usually one of them, and a cached row is free."""

    def __init__(self, x: np.ndarray, mean: np.ndarray, gamma: float,
                 speculate: int | None = None):
        n, d = x.shape
        # Centred features, so |x|^2 and x.y stay on the scale of the distances they give.
        self.x = np.empty((n, d), dtype=np.float32)
        sq = np.empty(n, dtype=np.float32)
        shift = mean.astype(x.dtype)
        for a in range(0, n, _CHUNK):
            block = self.x[a:a + _CHUNK]
            np.subtract(x[a:a + _CHUNK], shift, out=block, casting="unsafe")
            np.einsum("ij,ij->i", block, block, out=sq[a:a + _CHUNK])
        if not np.isfinite(sq).all():
            raise ValueError("features are too large for float32 distances: rescale them")
        # -gamma |x_i - x_j|^2 = a_i + a_j + 2 gamma x_i.x_j,  with a_i = -gamma |x_i|^2
        self.a = -gamma * sq.astype(np.float64)
        self.two_gamma = 2.0 * gamma
        self.speculate = SPECULATE if speculate is None else speculate
        self.capacity = 4 * (self.speculate + 1)
        self.cache: dict[int, np.ndarray] = {}  # item -> float32 row of x_i . x_item

    def pop(self, j: int, gains: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Row j of K into ``out``, for item j being picked now; ``gains`` rank what to
        prefetch."""
        if j not in self.cache:
            self._fill(j, gains)
        np.multiply(self.cache.pop(j), self.two_gamma, out=out)
        out += self.a
        out += self.a[j]
        np.minimum(out, 0.0, out=out)  # a distance below 0 is round-off
        return np.exp(out, out=out)

    def _fill(self, j: int, gains: np.ndarray) -> None:
        g = gains.copy()
        g[j] = -np.inf
        if self.cache:
            g[list(self.cache)] = -np.inf
        m = min(self.speculate, int(np.isfinite(g).sum()))
        extra = np.argpartition(-g, m - 1)[:m] if m > 0 else np.empty(0, dtype=np.int64)
        batch = [j, *(int(i) for i in extra)]
        dots = self.x[batch] @ self.x.T  # one pass over the features for all rows
        for item, row in zip(batch, dots, strict=True):
            self.cache[item] = row.copy()  # own memory: a kept row must not pin its batch
        if len(self.cache) > self.capacity:  # keep the rows of the items most likely next
            keep = sorted(self.cache, key=lambda i: -gains[i])[: self.capacity]
            self.cache = {i: self.cache[i] for i in (*keep, j) if i in self.cache}


def _argmax(gains: np.ndarray) -> int:
    """Index of the largest gain; gains within TIE_TOL of it are ties, lowest index wins."""
    return int(np.argmax(gains >= gains.max() - TIE_TOL))


def _greedy(features: Any, scores: Any, k: int, eta: float,
            gamma: float | None = None) -> tuple[list[int], list[float]]:
    """Greedy MAP of T; returns the picks in order and each pick's marginal gain."""
    eta, gamma = _check_eta(eta), _check_gamma(gamma)
    x, mean = _features(features)
    s = _scores(scores, len(x))
    n = len(x)
    k = _check_k(k, n)
    g = _median_gamma(x) if gamma is None else gamma
    gamma_hat = normalised_scores(s)
    use_scores = eta > 0 and gamma_hat.any()
    rows = _KernelRows(x, mean, g)

    chol = np.empty((k, n))  # chol[t, i]: entry t of c_i
    d2 = np.full(n, 2.0)  # d_i^2: the diversity gain of item i is log d_i^2
    gains, tmp = np.empty(n), np.empty(n)
    picked: list[int] = []
    step_gains: list[float] = []
    total = 0.0  # sum of gamma_hat over the picks
    for t in range(k):
        # gain_i = log d_i^2 + eta * (log(1 + total + gamma_hat_i) - log(1 + total)); the last
        # term is the same for every i, so it is subtracted from the pick's gain only.
        np.log(np.maximum(d2, 1.0, out=gains), out=gains)  # d_i^2 >= 1 up to round-off
        if use_scores:
            np.log(np.add(gamma_hat, 1.0 + total, out=tmp), out=tmp)
            if eta != 1.0:
                tmp *= eta
            gains += tmp
        gains[picked] = -np.inf
        j = _argmax(gains)
        picked.append(j)
        step_gains.append(float(gains[j] - eta * np.log1p(total)) if use_scores
                          else float(gains[j]))

        e = rows.pop(j, gains, out=chol[t])  # K_j., becomes the new entry of every c_i
        if t:
            e -= chol[:t, j] @ chol[:t]
        e /= np.sqrt(d2[j])
        d2 -= np.multiply(e, e, out=tmp)
        total += gamma_hat[j]
    return picked, step_gains


def greedy_map(features: Any, scores: Any, k: int, eta: float,
               gamma: float | None = None) -> list[int]:
    """The DPP-regularised subset of eq. 7: k indices in the order greedy picks them.

    features (N, D) and scores (N,), higher = more detrimental, as numpy arrays or torch
    tensors; eta >= 0 weighs the scores against diversity; gamma is the RBF bandwidth (None:
    median heuristic, see :func:`rbf_gamma`).
    """
    return _greedy(features, scores, k, eta, gamma)[0]


# ----------------------------------------------------------------------------- baselines

def top_k(scores: Any, k: int) -> list[int]:
    """The "without DPP" arm: the k highest scores, ties to the lower index."""
    s = _scores(scores, len(_to_numpy(scores)))
    k = _check_k(k, len(s))
    return [int(i) for i in np.argsort(-s, kind="stable")[:k]]


def random_k(n: int, k: int, seed: int) -> list[int]:
    """k distinct indices of range(n) uniformly at random, reproducible from ``seed`` (Table 4)."""
    k = _check_k(k, n)
    return [int(i) for i in np.random.default_rng(seed).choice(n, size=k, replace=False)]


# ----------------------------------------------------------------------------- by name

def _select_dpp(*, features: Any, scores: Any, k: int, eta: float, gamma: float | None = None,
                seed: int = 0) -> list[int]:
    return greedy_map(features, scores, k, eta, gamma)


def _select_topk(*, features: Any, scores: Any, k: int, eta: float, gamma: float | None = None,
                 seed: int = 0) -> list[int]:
    return top_k(scores, k)


def _select_random(*, features: Any, scores: Any, k: int, eta: float,
                   gamma: float | None = None, seed: int = 0) -> list[int]:
    return random_k(len(_to_numpy(scores)), k, seed)


SELECTORS: dict[str, Callable[..., list[int]]] = {
    "dpp": _select_dpp,
    "topk": _select_topk,
    "random": _select_random,
}


def select(name: str, *, features: Any, scores: Any, k: int, eta: float,
           gamma: float | None = None, seed: int = 0) -> list[int]:
    """Run the selector ``name`` ("dpp", "topk" or "random"); unused arguments are ignored."""
    if name not in SELECTORS:
        raise ValueError(f"unknown selector {name!r}; choose one of {', '.join(SELECTORS)}")
    return SELECTORS[name](features=features, scores=scores, k=k, eta=eta, gamma=gamma,
                           seed=seed)
