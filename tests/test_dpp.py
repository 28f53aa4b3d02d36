"""Greedy MAP of eq. 7 against a from-scratch brute force, and the selectors' contracts."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from trustrepair import dpp


def _kernel(x: np.ndarray, gamma: float) -> np.ndarray:
    """The full RBF kernel from explicit differences (small N only)."""
    diff = x[:, None, :] - x[None, :, :]
    return np.exp(-gamma * (diff**2).sum(-1))


def _T(kernel: np.ndarray, gamma_hat: np.ndarray, subset: list[int], eta: float) -> float:
    """T(S) = log det(K_S + I) + eta * log(1 + sum gamma_hat_S), from scratch."""
    if not subset:
        return 0.0
    sign, logdet = np.linalg.slogdet(kernel[np.ix_(subset, subset)] + np.eye(len(subset)))
    assert sign > 0
    return logdet + eta * math.log1p(gamma_hat[subset].sum())


def brute_greedy(x, scores, k, eta, gamma=None) -> tuple[list[int], list[float]]:
    """Greedy by recomputing T(S + i) for every candidate at every step; same tie rule."""
    kernel = _kernel(np.asarray(x, np.float64), dpp.rbf_gamma(x, gamma))
    s = np.asarray(scores, np.float64)
    gamma_hat = (s - s.min()) / (s.max() - s.min()) if s.max() > s.min() else np.zeros_like(s)
    picked: list[int] = []
    gains_taken: list[float] = []
    for _ in range(k):
        base = _T(kernel, gamma_hat, picked, eta)
        gains = np.full(len(s), -np.inf)
        for i in set(range(len(s))) - set(picked):
            gains[i] = _T(kernel, gamma_hat, [*picked, i], eta) - base
        j = int(np.argmax(gains >= gains.max() - dpp.TIE_TOL))
        picked.append(j)
        gains_taken.append(float(gains[j]))
    return picked, gains_taken


def instance(seed: int, n: int, d: int, ties: bool = False, duplicates: int = 0,
             dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Random features and scores; ``ties`` rounds scores to a few levels, ``duplicates``
    overwrites that many rows with copies of other rows."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3.0) + rng.normal(size=d) * 5
    s = rng.normal(size=n)
    if ties:
        s = np.round(s * 2) / 2
    for _ in range(duplicates):
        a, b = rng.choice(n, 2, replace=False)
        x[b] = x[a]
    return x.astype(dtype), s


CASES = [  # seed, N, D, k, eta, ties, duplicates
    (0, 20, 2, 10, 1.0, False, 0),
    (1, 30, 3, 10, 0.5, True, 0),
    (2, 40, 5, 8, 2.0, False, 6),
    (3, 60, 8, 10, 1.0, True, 10),
    (4, 25, 2, 10, 0.0, True, 5),
    (5, 50, 4, 10, 5.0, True, 8),
    (6, 60, 6, 10, 0.1, False, 0),
    (7, 35, 3, 10, 1.0, True, 12),
    (8, 15, 3, 15, 1.0, True, 3),  # k = N: every candidate, down to the last one
]


@pytest.mark.parametrize(("seed", "n", "d", "k", "eta", "ties", "dups"), CASES)
def test_matches_brute_force(seed, n, d, k, eta, ties, dups):
    x, s = instance(seed, n, d, ties, dups)
    fast, fast_gains = dpp._greedy(x, s, k, eta)
    slow, slow_gains = brute_greedy(x, s, k, eta)
    assert fast == slow
    np.testing.assert_allclose(fast_gains, slow_gains, atol=1e-6)
    assert dpp.greedy_map(x, s, k, eta) == fast


@pytest.mark.parametrize("speculate", [2, 16])
def test_matches_brute_force_through_the_row_cache(monkeypatch, speculate):
    """N large enough that rows come from several passes (and, speculating 2, the cache
    evicts)."""
    monkeypatch.setattr(dpp, "SPECULATE", speculate)
    x, s = instance(11, 300, 4, ties=True, duplicates=30)
    assert dpp.greedy_map(x, s, 30, 1.0) == brute_greedy(x, s, 30, 1.0)[0]


def test_speculative_rows_do_not_change_picks(monkeypatch):
    x, s = instance(12, 3000, 16, ties=True, duplicates=200, dtype=np.float32)
    picks = dpp.greedy_map(x, s, 60, 1.0)
    monkeypatch.setattr(dpp, "SPECULATE", 0)
    assert dpp.greedy_map(x, s, 60, 1.0) == picks


def test_exact_ties_go_to_the_lower_index():
    x = np.ones((8, 3))  # all points coincide and all scores tie: every step is a tie
    assert dpp.greedy_map(x, np.zeros(8), 5, eta=1.0) == [0, 1, 2, 3, 4]
    x, s = instance(3, 12, 2)
    x2, s2 = np.vstack([x, x]), np.concatenate([s, s])  # item i + 12 duplicates item i
    picks = dpp.greedy_map(x2, s2, 12, eta=1.0)
    first = picks[0]
    assert first < 12 and first == int(np.argmax(s))


def test_huge_eta_is_top_k():
    x, s = instance(21, 60, 5)
    assert dpp.greedy_map(x, s, 10, eta=1e6) == dpp.top_k(s, 10)
    x, s = instance(22, 60, 5, ties=True)  # within a tie diversity decides, not the index
    picks, ranked = dpp.greedy_map(x, s, 15, eta=1e6), dpp.top_k(s, 15)
    assert list(s[picks]) == list(s[ranked])


def test_eta_zero_is_pure_diversity():
    x, s = instance(31, 40, 4, duplicates=5)
    picks = dpp.greedy_map(x, s, 10, eta=0.0)
    assert picks == dpp.greedy_map(x, -s, 10, eta=0.0)  # scores play no part
    assert picks == brute_greedy(x, np.zeros(len(s)), 10, eta=0.0)[0]


def test_duplicates_wait_until_the_distinct_points_are_used():
    """Well-separated points: a duplicate of a picked point gains log(1.5), a new point ~log 2.

    (With + I a duplicate is not ruled out: in general a point close to several picks can
    gain less than an exact duplicate of one pick.)"""
    grid = np.array(list(itertools.product(range(3), range(3))), dtype=float)  # 9 points
    x = np.vstack([grid, grid[[0, 4, 8]]])  # rows 9, 10, 11 duplicate rows 0, 4, 8
    picks, gains = dpp._greedy(x, np.zeros(12), 10, eta=0.0, gamma=30.0)
    assert sorted(picks[:9]) == list(range(9))
    assert picks[9] == 9
    assert gains[0] == pytest.approx(math.log(2.0), abs=1e-9)
    assert gains[9] == pytest.approx(math.log(1.5), abs=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_objective_along_the_greedy_path(seed):
    x, s = instance(40 + seed, 50, 6, ties=bool(seed % 2), duplicates=3 * seed)
    eta = [0.0, 0.3, 1.0, 4.0][seed]
    picks, gains = dpp._greedy(x, s, 12, eta)
    values = [dpp.objective(x, s, picks[:t], eta) for t in range(13)]
    assert values[0] == 0.0
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values))
    np.testing.assert_allclose(np.diff(values), gains, atol=1e-6)


def test_objective_matches_from_scratch():
    x, s = instance(50, 30, 4, duplicates=3)
    gamma = dpp.rbf_gamma(x)
    kernel = _kernel(x, gamma)
    gamma_hat = (s - s.min()) / (s.max() - s.min())
    for subset in ([], [3], [0, 5, 7], list(range(0, 30, 3))):
        assert dpp.objective(x, s, subset, 0.7) == pytest.approx(
            _T(kernel, gamma_hat, subset, 0.7), abs=1e-10)
    assert dpp.objective(x, s, [1, 2], 0.7, gamma=0.3) == pytest.approx(
        _T(_kernel(x, 0.3), gamma_hat, [1, 2], 0.7), abs=1e-10)


@pytest.mark.parametrize("eta", [0.0, 2.0])
def test_submodular(eta):
    """gain(i | A) >= gain(i | B) for A within B and i outside B: the basis of the greedy bound."""
    rng = np.random.default_rng(60)
    for trial in range(40):
        x, s = instance(100 + trial, 12, 3, ties=trial % 2 == 0, duplicates=trial % 3)
        gamma = dpp.rbf_gamma(x) * rng.uniform(0.2, 5)
        order = rng.permutation(12)
        b = list(order[: rng.integers(1, 8)])
        a = b[: rng.integers(0, len(b) + 1)]
        i = int(order[-1])

        def gain(subset, i=i, x=x, s=s, gamma=gamma):
            return (dpp.objective(x, s, [*subset, i], eta, gamma)
                    - dpp.objective(x, s, subset, eta, gamma))

        assert gain(a) >= gain(b) - 1e-9
        assert gain(b) >= -1e-12  # monotone


def test_numpy_and_torch_agree():
    x, s = instance(70, 200, 12, ties=True, duplicates=20)
    for dtype in (np.float64, np.float32):
        xa, sa = x.astype(dtype), s.astype(dtype)
        picks = dpp.greedy_map(xa, sa, 25, 1.0)
        assert dpp.greedy_map(torch.from_numpy(xa), torch.from_numpy(sa), 25, 1.0) == picks
        assert dpp.objective(torch.from_numpy(xa), torch.from_numpy(sa), picks, 1.0) == \
            pytest.approx(dpp.objective(xa, sa, picks, 1.0), abs=1e-12)
    assert dpp.greedy_map(x.astype(np.float32), s, 25, 1.0) == dpp.greedy_map(x, s, 25, 1.0)
    assert all(isinstance(i, int) for i in picks)


def test_rbf_gamma_median_heuristic():
    x, _ = instance(80, 40, 5)
    pairs = [((x[i] - x[j]) ** 2).sum() for i in range(40) for j in range(i + 1, 40)]
    assert dpp.rbf_gamma(x) == pytest.approx(1 / np.median(pairs), rel=1e-10)
    assert dpp.rbf_gamma(x, 0.25) == 0.25
    assert dpp.rbf_gamma(np.ones((5, 2))) == 1.0  # all points coincide
    big = np.random.default_rng(0).normal(size=(5000, 3))  # sampled: same number every call
    assert dpp.rbf_gamma(big) == dpp.rbf_gamma(big.copy())
    # |x - y|^2 = 2 chi2_3 for standard normal x, y; the median of chi2_3 is 2.366
    assert dpp.rbf_gamma(big) == pytest.approx(1 / (2 * 2.366), rel=0.03)


def test_normalised_scores():
    np.testing.assert_allclose(dpp.normalised_scores([2.0, 4.0, 3.0]), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(dpp.normalised_scores([3.0, 3.0]), [0.0, 0.0])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"k": 11}, r"subset size k=11 is larger than the N=10 candidates"),
    ({"k": 0}, r"subset size k must be positive, got k=0"),
    ({"k": -2}, r"subset size k must be positive"),
    ({"k": 2.5}, r"subset size k must be an integer"),
    ({"eta": -0.1}, r"eta must be a finite number >= 0"),
    ({"eta": float("nan")}, r"eta must be a finite number >= 0"),
    ({"gamma": 0.0}, r"gamma must be a finite number > 0"),
    ({"gamma": -1.0}, r"gamma must be a finite number > 0"),
    ({"scores": np.zeros(9)}, r"features has N=10 rows but scores has 9 entries"),
    ({"features": np.zeros(10)}, r"features must be a 2-D \(N, D\) array"),
    ({"scores": np.zeros((10, 1))}, r"scores must be a 1-D"),
])
def test_validation(kwargs, message):
    args = {"features": np.random.default_rng(0).normal(size=(10, 3)), "scores": np.arange(10.0),
            "k": 3, "eta": 1.0, "gamma": None} | kwargs
    with pytest.raises(ValueError, match=message):
        dpp.greedy_map(**args)


@pytest.mark.parametrize("where", ["features", "scores"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_inputs(where, bad):
    x, s = instance(90, 10, 3, dtype=np.float32)
    (x if where == "features" else s)[4] = bad
    with pytest.raises(ValueError, match=f"{where} contain NaN or inf"):
        dpp.greedy_map(x, s, 3, 1.0)


def test_top_k():
    s = np.array([0.5, 2.0, 2.0, -1.0, 2.0, 0.7])
    assert dpp.top_k(s, 4) == [1, 2, 4, 5]  # ties to the lower index
    assert dpp.top_k(torch.tensor(s), 6) == [1, 2, 4, 5, 0, 3]
    with pytest.raises(ValueError, match="k=7 is larger than the N=6"):
        dpp.top_k(s, 7)


def test_random_k():
    a = dpp.random_k(100, 10, seed=3)
    assert a == dpp.random_k(100, 10, seed=3)
    assert a != dpp.random_k(100, 10, seed=4)
    assert len(set(a)) == 10 and all(0 <= i < 100 for i in a)
    assert sorted(dpp.random_k(5, 5, seed=0)) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="k=6 is larger than the N=5"):
        dpp.random_k(5, 6, seed=0)


def test_select_by_name():
    x, s = instance(95, 40, 3)
    kw = {"features": x, "scores": s, "k": 5, "eta": 1.0, "seed": 7}
    assert set(dpp.SELECTORS) == {"dpp", "topk", "random"}
    assert dpp.select("dpp", **kw) == dpp.greedy_map(x, s, 5, 1.0)
    assert dpp.select("topk", **kw) == dpp.top_k(s, 5)
    assert dpp.select("random", **kw) == dpp.random_k(40, 5, seed=7)
    with pytest.raises(ValueError, match="unknown selector 'greedy'.*dpp, topk, random"):
        dpp.select("greedy", **kw)
