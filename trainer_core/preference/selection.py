"""Which candidate pairs a labeller sees first.

Uncertain first (active learning): among candidate pairs, those whose predicted preference is closest
to 50/50 under the current model. Their labels are the ones the model cannot yet guess, so each moves
the fit most; a random pair is mostly one the model already gets right.
"""

from __future__ import annotations

import itertools

import numpy as np


def all_pairs(n: int) -> list[tuple[int, int]]:
    """Every unordered pair (i, j), i < j, of n items."""
    return list(itertools.combinations(range(n), 2))


def uncertain_first(preferences: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k candidates whose P(a preferred) is closest to 1/2, most uncertain first."""
    distance = np.abs(np.asarray(preferences, np.float64) - 0.5)
    return np.argsort(distance, kind="stable")[:k]
