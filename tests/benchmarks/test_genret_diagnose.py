"""The tiger-vs-SASRec swap diagnosis: a swapped score row keeps one model's group masses and the other's shares."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, logsumexp

from benchmark_module import load_benchmark

diagnose = load_benchmark("genret_diagnose")


def _logp(seed: int) -> np.ndarray:
    return log_softmax(np.random.default_rng(seed).normal(scale=3.0, size=(4, 9)), axis=1)


group_of = np.array([0, 0, 1, 2, 2, 2, 1, 0, 3])


def _mass(logp: np.ndarray, group: int) -> np.ndarray:
    return np.exp(logp[:, group_of == group]).sum(axis=1)


def test_a_swap_takes_group_masses_from_one_model_and_shares_from_the_other() -> None:
    a, b = _logp(0), _logp(1)
    swapped = diagnose.swap_within(a, b, group_of)
    np.testing.assert_allclose(logsumexp(swapped, axis=1), 0.0, atol=1e-12)  # still a distribution
    for g in range(4):
        np.testing.assert_allclose(_mass(swapped, g), _mass(a, g), rtol=1e-10)
        inside = group_of == g
        share = np.exp(swapped[:, inside]) / _mass(swapped, g)[:, None]
        np.testing.assert_allclose(share, np.exp(b[:, inside]) / _mass(b, g)[:, None], rtol=1e-10)
    # Swapping a model with itself changes nothing; with another model it does.
    np.testing.assert_allclose(diagnose.swap_within(a, a, group_of), a, atol=1e-12)
    assert not np.allclose(swapped, a)


def test_group_masses_survive_a_group_far_below_the_best_item() -> None:
    logp = np.array([[0.0, -690.0, -np.inf]])
    out = diagnose.group_log_mass(logp, np.array([0, 1, 2]))
    np.testing.assert_allclose(out[0, :2], [0.0, -690.0])
    assert np.isfinite(out[0, 2]) and out[0, 2] < -700  # a zero mass is floored, never -inf or NaN


def test_candidates_from_one_model_are_ordered_by_the_other() -> None:
    import scipy.sparse as sp

    gen = np.array([[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]])  # best first: items 0, 1, 2, ...
    dense = np.array([[0.0, 1.0, 2.0, 3.0, 9.0, 8.0]])  # would pick items 4 and 5, which gen does not offer
    seen = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 6))  # item 0 was seen: not a candidate
    out = diagnose.rank_candidates(gen, dense, seen, 3)
    assert np.isfinite(out[0]).tolist() == [False, True, True, True, False, False]
    np.testing.assert_array_equal(out[0, 1:4], dense[0, 1:4])  # the candidates keep the dense model's order: 3, 2, 1
