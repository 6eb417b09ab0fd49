"""Which candidate pairs a labeller sees first.

Uncertain first (active learning) shows the pair whose label would teach the model most: the one that
most shrinks the uncertainty of its weights. Under the Laplace approximation a label on the pair with
standardised feature difference d, predicted P(a preferred) = p, multiplies the determinant of the
weights' posterior precision by 1 + p (1 - p) d^T C d, where C is their covariance. So a pair is
informative when its outcome is a toss-up (p near 1/2) *and* its images differ along directions the labels
so far have not pinned down. The bare rule "closest to 50/50" (`closest_to_even`) also favours pairs
whose images hardly differ, whose predicted p is 1/2 whatever the weights, and whose label is then
mostly a tie that teaches nothing; `vgrpo bench preference` measures both against random order.
"""

from __future__ import annotations

import itertools

import numpy as np

from trainer_core.preference.bradley_terry import LinearPreferenceModel


def all_pairs(n: int) -> list[tuple[int, int]]:
    """Every unordered pair (i, j), i < j, of n items."""
    return list(itertools.combinations(range(n), 2))


def information(model: LinearPreferenceModel, features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
    """p (1 - p) d^T C d per candidate pair (features [N, D] of a and of b): how much its label would
    shrink the weights' uncertainty. A model without a covariance counts every direction as unknown."""
    p = model.preference(features_a, features_b)
    d = (np.asarray(features_a, np.float64) - np.asarray(features_b, np.float64)) / model.scale
    spread = np.einsum("nd,nd->n", d @ model.covariance, d) if model.covariance is not None else (d * d).sum(1)
    return p * (1 - p) * spread


def uncertain_first(model: LinearPreferenceModel, features_a: np.ndarray, features_b: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k most informative candidate pairs, most informative first."""
    return np.argsort(-information(model, features_a, features_b), kind="stable")[:k]


def closest_to_even(preferences: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k candidates whose P(a preferred) is closest to 1/2, closest first."""
    distance = np.abs(np.asarray(preferences, np.float64) - 0.5)
    return np.argsort(distance, kind="stable")[:k]
