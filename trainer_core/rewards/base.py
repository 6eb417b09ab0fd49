"""The reward interface and the reward mix.

A reward maps a batch of images and their prompts to one score per image. A
mix combines several with weights, in one of two ways:

- `sum_then_normalize`: r = sum_k w_k r_k, then group advantages of r;
- `normalize_then_sum`: group advantages of each r_k, then sum_k w_k A_k
  (MixGRPO style: a reward with a large scale cannot drown the others).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import torch

from trainer_core.vgrpo import ADVANTAGE_STD_SCOPES, group_advantages

AGGREGATIONS = ("sum_then_normalize", "normalize_then_sum")


class RewardError(RuntimeError):
    """A reward that failed or returned something other than one finite score per image."""


class Reward(ABC):
    """images uint8 [B, H, W, 3] + prompts -> float scores [B]."""

    name: str
    higher_is_better: bool = True

    @abstractmethod
    def score(self, images: np.ndarray, prompts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class RewardMixConfig:
    """Which rewards to optimise and how to combine them.

    weights: reward name -> weight; weights must sum to a positive number ({"geneval": 1.0}).
    aggregation: "sum_then_normalize" or "normalize_then_sum" (MixGRPO) (sum_then_normalize).
    advantage_std: what divides the group-centred rewards: each group's own std ("group", GRPO) or the
        std of all centred rewards of the iteration ("batch", so near-ties stay small) (group; paper group).
    """

    weights: dict[str, float]
    aggregation: str = "sum_then_normalize"
    advantage_std: str = "group"

    def __post_init__(self) -> None:
        if not self.weights:
            raise ValueError("rewards.weights: name at least one reward")
        for name, weight in self.weights.items():
            if not isinstance(weight, int | float) or not np.isfinite(weight):
                raise ValueError(f"rewards.weights.{name}: must be a finite number, got {weight!r}")
        total = sum(self.weights.values())
        if not total > 0:
            raise ValueError(f"rewards.weights: must sum to a positive number, got {total:g}")
        if self.advantage_std not in ADVANTAGE_STD_SCOPES:
            raise ValueError(
                f"rewards.advantage_std: must be one of {', '.join(ADVANTAGE_STD_SCOPES)}, got {self.advantage_std!r}"
            )
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"rewards.aggregation: must be one of {', '.join(AGGREGATIONS)}, got {self.aggregation!r}")


def score_checked(reward: Reward, images: np.ndarray, prompts: list[str]) -> np.ndarray:
    """Run one reward and insist on one finite score per image; failures name the reward."""
    try:
        scores = np.asarray(reward.score(images, prompts), dtype=np.float64)
    except Exception as error:
        raise RewardError(f"reward {reward.name!r} failed: {error}") from error
    if scores.shape != (len(images),):
        raise RewardError(f"reward {reward.name!r} returned shape {scores.shape}, expected ({len(images)},)")
    bad = ~np.isfinite(scores)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise RewardError(
            f"reward {reward.name!r} returned {int(bad.sum())} non-finite score(s), "
            f"first for image {first} (prompt {prompts[first]!r})"
        )
    return scores if reward.higher_is_better else -scores


class RewardMix:
    """Weighted rewards and their group advantages."""

    def __init__(self, rewards: dict[str, Reward], config: RewardMixConfig) -> None:
        missing = [name for name in config.weights if name not in rewards]
        if missing:
            raise ValueError(f"rewards.weights: unknown reward {missing[0]!r}; known: {', '.join(sorted(rewards))}")
        self.rewards = {name: rewards[name] for name in config.weights}
        self.config = config

    def score(self, images: np.ndarray, prompts: list[str]) -> dict[str, np.ndarray]:
        """Scores [B] per reward (oriented so higher is better)."""
        return {name: score_checked(reward, images, prompts) for name, reward in self.rewards.items()}

    def combined(self, scores: dict[str, np.ndarray]) -> np.ndarray:
        """The weighted sum of rewards [B] (what `reward_mean` reports)."""
        return sum(self.config.weights[name] * scores[name] for name in self.rewards)  # type: ignore[return-value]

    def advantages(self, scores: dict[str, np.ndarray], group_size: int, eps: float = 1e-4) -> torch.Tensor:
        """Group-normalised advantages [B] under the configured aggregation."""

        def normalise(values: np.ndarray) -> torch.Tensor:
            values_t = torch.as_tensor(values, dtype=torch.float32)
            return group_advantages(values_t, group_size, eps, std_scope=self.config.advantage_std)

        if self.config.aggregation == "sum_then_normalize":
            advantages = normalise(self.combined(scores))
        else:
            advantages = sum(self.config.weights[n] * normalise(scores[n]) for n in self.rewards)  # type: ignore[assignment]
        return advantages

    def group_spread(self, scores: dict[str, np.ndarray], group_size: int) -> np.ndarray:
        """How much each group's rewards differ [groups]: the std of the combined reward, or under
        normalize_then_sum the weighted sum of each reward's std. Zero means every image ties, so
        the group's advantages carry nothing but noise."""

        def stds(values: np.ndarray) -> np.ndarray:
            return values.reshape(-1, group_size).std(axis=1)

        if self.config.aggregation == "sum_then_normalize":
            return stds(self.combined(scores))
        return sum(abs(self.config.weights[n]) * stds(scores[n]) for n in self.rewards)  # type: ignore[return-value]
