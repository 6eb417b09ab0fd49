"""A Bradley-Terry preference model on frozen features, and its cross-validated accuracy.

Each label compares image a with image b of one prompt. The model gives every image a score
r(x) = w . standardise(phi(x)) and reads a label through

    P(a preferred over b) = sigmoid(r(a) - r(b)).

The outcome y is 1 when a won, 0 when b won and 1/2 for a tie: a tie counts as half a win each way,
so its log-likelihood 1/2 log p + 1/2 log(1 - p) pulls the two scores together. The fit maximises
the mean log-likelihood minus a penalty on w: lasso (l1 ||w||_1), which keeps the few features a taste
is about and zeroes the rest, or ridge (l2 / 2 ||w||^2), which spreads weight over many correlated
ones (as CLIP embeddings need). Both are convex; one accelerated proximal-gradient solver (FISTA with
restarts, float64) handles both.

Accuracy is pairwise: the share of decided labels (ties left out) whose winner has the higher score.
Cross-validation keeps every image on one side of a split (labels that share an image fall in the same
fold), and picks the penalty (kind and strength) inside each training split, so the reported accuracy is
what the model does on labels it never saw.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

#: outcome of a label: a won, b won, or a tie (half a win each way)
OUTCOMES: dict[str, float] = {"a": 1.0, "b": 0.0, "tie": 0.5}


@dataclass(frozen=True)
class Penalty:
    """What keeps a fit from chasing noise: "l1" (lasso) or "l2" (ridge), of a strength >= 0."""

    kind: str
    strength: float

    def __post_init__(self) -> None:
        if self.kind not in ("l1", "l2"):
            raise ValueError(f"penalty: kind must be l1 or l2, got {self.kind!r}")
        if not self.strength >= 0:
            raise ValueError(f"penalty: strength must be >= 0, got {self.strength}")

    def __str__(self) -> str:
        return f"{self.kind}={self.strength:g}"


@dataclass(frozen=True)
class BradleyTerryConfig:
    """How a preference model is fitted.

    l1_grid: lasso strengths on standardised features that cross-validation may pick
        (0.003, 0.01, 0.03, 0.1, 0.3).
    l2_grid: ridge strengths it may pick instead (0.01, 0.1, 1, 10).
    folds: k of k-fold cross-validation, fewer when there are fewer groups of labels (5).
    seed: how labels are dealt into folds (0).
    """

    l1_grid: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3)
    l2_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "l1_grid", tuple(self.l1_grid))
        object.__setattr__(self, "l2_grid", tuple(self.l2_grid))
        for name in ("l1_grid", "l2_grid"):
            if any(not value >= 0 for value in getattr(self, name)):
                raise ValueError(f"{name}: strengths must be >= 0, got {getattr(self, name)}")
        if not self.l1_grid and not self.l2_grid:
            raise ValueError("l1_grid, l2_grid: give at least one strength")
        if self.folds < 2:
            raise ValueError(f"folds: must be at least 2, got {self.folds}")

    @property
    def penalties(self) -> tuple[Penalty, ...]:
        return (*(Penalty("l1", v) for v in self.l1_grid), *(Penalty("l2", v) for v in self.l2_grid))


@dataclass(frozen=True)
class LinearPreferenceModel:
    """r(x) = weights . (phi(x) - mean) / scale.

    covariance: how uncertain the weights still are given the labels they were fitted on (the Laplace
    approximation of their posterior under a unit Gaussian prior on standardised features), which is what
    ordering pairs uncertain first reads; None for a model stored without it.
    """

    weights: np.ndarray  # [D]
    mean: np.ndarray  # [D]
    scale: np.ndarray  # [D]
    covariance: np.ndarray | None = None  # [D, D]

    def score(self, features: np.ndarray) -> np.ndarray:
        """Scores [N] of features [N, D]."""
        return ((np.asarray(features, np.float64) - self.mean) / self.scale) @ self.weights

    def preference(self, features_a: np.ndarray, features_b: np.ndarray) -> np.ndarray:
        """P(a preferred over b) [N]."""
        return _sigmoid(self.score(features_a) - self.score(features_b))


@dataclass(frozen=True)
class CrossValidation:
    """Pairwise accuracy of a fit on labels it did not see."""

    accuracy: float  # over the held-out decided labels (ties left out)
    standard_error: float  # binomial, over those labels
    n_scored: int  # decided labels that were scored
    folds: int


def outcomes(choices: Sequence[str]) -> np.ndarray:
    """Outcomes [N] (1, 0 or 1/2) of choices "a" / "b" / "tie"."""
    try:
        return np.array([OUTCOMES[c] for c in choices], np.float64)
    except KeyError as error:
        raise ValueError(f"choice: must be a, b or tie, got {error.args[0]!r}") from None


def fit_bradley_terry(
    features_a: np.ndarray,
    features_b: np.ndarray,
    outcome: np.ndarray,
    penalty: Penalty,
    max_iterations: int = 5_000,
    tolerance: float = 1e-9,
) -> LinearPreferenceModel:
    """The maximum a-posteriori linear model of labels (features [N, D] of a and of b, outcome [N])."""
    features_a, features_b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if features_a.shape != features_b.shape or features_a.ndim != 2 or len(outcome) != len(features_a):
        raise ValueError(
            f"features: expected two [N, D] arrays and N outcomes, got {features_a.shape}, "
            f"{features_b.shape} and {len(outcome)}"
        )
    both = np.concatenate([features_a, features_b])
    mean = both.mean(axis=0)
    scale = both.std(axis=0)
    scale[scale < 1e-8] = 1.0  # a constant feature carries nothing; leave it unscaled
    x = (features_a - features_b) / scale  # [N, D]; the mean cancels in a difference
    y = np.asarray(outcome, np.float64)
    n = len(y)
    ridge = penalty.strength if penalty.kind == "l2" else 0.0
    lasso = penalty.strength if penalty.kind == "l1" else 0.0
    # the mean logistic loss has a gradient Lipschitz in w with constant sigma_max(x)^2 / (4 n)
    step = 1.0 / (np.linalg.norm(x, 2) ** 2 / (4 * n) + ridge + 1e-12)

    def gradient(w: np.ndarray) -> np.ndarray:
        return x.T @ (_sigmoid(x @ w) - y) / n + ridge * w

    weights = np.zeros(x.shape[1])
    momentum_point, t = weights.copy(), 1.0
    for _ in range(max_iterations):
        candidate = momentum_point - step * gradient(momentum_point)
        candidate = np.sign(candidate) * np.maximum(np.abs(candidate) - step * lasso, 0.0)  # the l1 prox
        change = candidate - weights
        if np.max(np.abs(change), initial=0.0) < tolerance:
            weights = candidate
            break
        if (momentum_point - candidate) @ change > 0:  # momentum points uphill: restart it
            t = 1.0
        t_next = (1 + np.sqrt(1 + 4 * t * t)) / 2
        momentum_point = candidate + (t - 1) / t_next * change
        weights, t = candidate, t_next
    return LinearPreferenceModel(weights, mean, scale, laplace_covariance(x, weights))


def laplace_covariance(differences: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The posterior covariance [D, D] of the weights around the fit, for labels whose standardised feature
    differences are `differences` [N, D]: the inverse of the log-likelihood's curvature
    sum_i p_i (1 - p_i) x_i x_i^T plus a unit prior precision, so that it is defined for any N."""
    p = _sigmoid(differences @ weights)
    curvature = (differences * (p * (1 - p))[:, None]).T @ differences
    return np.linalg.inv(curvature + np.eye(len(weights)))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow for large |z|


def pairwise_correct(
    model: LinearPreferenceModel, features_a: np.ndarray, features_b: np.ndarray, outcome: np.ndarray
) -> np.ndarray:
    """Per decided label (ties dropped), 1 if the model ranks its winner higher, 1/2 on an exact tie, else 0."""
    decided = outcome != 0.5
    margin = model.score(features_a[decided]) - model.score(features_b[decided])
    sign = np.where(outcome[decided] == 1.0, 1.0, -1.0)
    return np.where(margin * sign > 0, 1.0, np.where(margin == 0, 0.5, 0.0))


def group_folds(groups: Sequence[Hashable], folds: int, seed: int = 0) -> np.ndarray:
    """A fold index [N] per label such that labels of one group share a fold, folds as even as they can be.

    Groups are dealt largest first, each to the fold holding the fewest labels so far (ties broken at
    random), so a few large groups do not leave a fold empty when small ones remain.
    """
    rng = np.random.default_rng(seed)
    members: dict[Hashable, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    order = list(members.values())
    rng.shuffle(order)  # type: ignore[arg-type]
    order.sort(key=len, reverse=True)
    sizes = np.zeros(folds, np.int64)
    assignment = np.empty(len(groups), np.int64)
    for indices in order:
        smallest = np.flatnonzero(sizes == sizes.min())
        fold = int(rng.choice(smallest))
        assignment[indices] = fold
        sizes[fold] += len(indices)
    return assignment


def shared_image_groups(images_a: Sequence[Hashable], images_b: Sequence[Hashable]) -> list[int]:
    """A group id per label: labels connected through a shared image share a group (union-find)."""
    parent: dict[Hashable, Hashable] = {}

    def root(item: Hashable) -> Hashable:
        parent.setdefault(item, item)
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    for a, b in zip(images_a, images_b, strict=True):
        parent[root(a)] = root(b)
    ids: dict[Hashable, int] = {}
    return [ids.setdefault(root(a), len(ids)) for a in images_a]


def select_penalty(
    features_a: np.ndarray, features_b: np.ndarray, outcome: np.ndarray, groups: np.ndarray, config: BradleyTerryConfig
) -> Penalty:
    """The penalty of the grid with the best k-fold log-likelihood on these labels (one: no search)."""
    candidates = config.penalties
    if len(candidates) == 1:
        return candidates[0]
    folds = group_folds(list(groups), min(config.folds, len(set(groups.tolist()))), config.seed + 1)
    if len(set(folds.tolist())) < 2:
        return candidates[len(candidates) // 2]
    losses = []
    for penalty in candidates:
        total = 0.0
        for fold in set(folds.tolist()):
            train, test = folds != fold, folds == fold
            model = fit_bradley_terry(features_a[train], features_b[train], outcome[train], penalty)
            p = np.clip(model.preference(features_a[test], features_b[test]), 1e-12, 1 - 1e-12)
            total -= float(np.sum(outcome[test] * np.log(p) + (1 - outcome[test]) * np.log(1 - p)))
        losses.append(total)
    return candidates[int(np.argmin(losses))]


def cross_validate(
    features_a: np.ndarray,
    features_b: np.ndarray,
    outcome: np.ndarray,
    groups: Sequence[Hashable],
    config: BradleyTerryConfig,
) -> CrossValidation:
    """k-fold pairwise accuracy, the penalty picked inside each training split (nested)."""
    group_ids = np.asarray(groups)
    k = min(config.folds, len(set(group_ids.tolist())))
    if k < 2:
        raise ValueError("labels: cross-validation needs labels of at least two different images")
    folds = group_folds(list(groups), k, config.seed)
    correct: list[np.ndarray] = []
    for fold in range(k):
        train, test = folds != fold, folds == fold
        penalty = select_penalty(features_a[train], features_b[train], outcome[train], group_ids[train], config)
        model = fit_bradley_terry(features_a[train], features_b[train], outcome[train], penalty)
        correct.append(pairwise_correct(model, features_a[test], features_b[test], outcome[test]))
    scored = np.concatenate(correct)
    if not len(scored):
        return CrossValidation(float("nan"), float("nan"), 0, k)
    accuracy = float(scored.mean())
    return CrossValidation(accuracy, float(np.sqrt(accuracy * (1 - accuracy) / len(scored))), len(scored), k)


def fit_with_validation(
    features_a: np.ndarray,
    features_b: np.ndarray,
    outcome: np.ndarray,
    groups: Sequence[Hashable],
    config: BradleyTerryConfig,
) -> tuple[LinearPreferenceModel, CrossValidation, Penalty]:
    """The model fitted on every label, its cross-validated accuracy, and the penalty it was fitted with."""
    cv = cross_validate(features_a, features_b, outcome, groups, config)
    penalty = select_penalty(features_a, features_b, outcome, np.asarray(groups), config)
    return fit_bradley_terry(features_a, features_b, outcome, penalty), cv, penalty
