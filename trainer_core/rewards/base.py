"""The reward interface and the reward mix.

A reward maps a batch of images and their prompts to one score per image. A
mix combines several with weights, in one of two ways:

- `sum_then_normalize`: r = sum_k w_k r_k, then group advantages of r;
- `normalize_then_sum`: group advantages of each r_k, then sum_k w_k A_k
  (MixGRPO style: a reward with a large scale cannot drown the others).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from typing import Any

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


DTYPES = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class RewardModelConfig:
    """How a learned reward loads and runs (`rewards.models.NAME`).

    path: its weights, a directory or a file, relative to the models directory or absolute; "" looks in
        `<models dir>/rewards/NAME` ("").
    device: auto (the GPU when there is one), cpu, cuda or cuda:N (auto).
    dtype: auto (bf16 on a GPU, fp32 on a CPU), float32 or bfloat16 (auto).
    batch_size: images scored per model call (16).
    """

    path: str = ""
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 16

    def __post_init__(self) -> None:
        if not isinstance(self.path, str):
            raise ValueError(f"path: must be a string, got {type(self.path).__name__}")
        if not isinstance(self.device, str) or (
            self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:")
        ):
            raise ValueError(f"device: must be auto, cpu or cuda[:N], got {self.device!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size: must be a whole number >= 1, got {self.batch_size!r}")

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.bfloat16 if self.torch_device().type == "cuda" else torch.float32
        return getattr(torch, self.dtype)


@dataclass(frozen=True)
class RewardMixConfig:
    """Which rewards to optimise and how to combine them.

    weights: reward name -> weight; weights must sum to a positive number ({"geneval": 1.0}).
    aggregation: "sum_then_normalize" or "normalize_then_sum" (MixGRPO) (sum_then_normalize).
    advantage_std: what divides the group-centred rewards: each group's own std ("group", GRPO) or the
        std of all centred rewards of the iteration ("batch", so near-ties stay small) (group; paper group).
    monitor: rewards scored and drawn every iteration but not trained on, to see training on one reward
        hurt another (the papers' out-of-domain metrics) (none).
    models: reward name -> how its model loads and runs (path, device, dtype, batch_size; see
        `RewardModelConfig`) ({}: each from `<models dir>/rewards/NAME`).
    """

    weights: dict[str, float]
    aggregation: str = "sum_then_normalize"
    advantage_std: str = "group"
    monitor: tuple[str, ...] = ()
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

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
        object.__setattr__(self, "monitor", tuple(self.monitor))
        trained = [name for name in self.monitor if name in self.weights]
        if trained:
            raise ValueError(f"rewards.monitor: {trained[0]} is trained on (it has a weight); a monitor carries none")
        for name in self.models:
            self.model_config(name)  # each section is checked now, not when the job loads it

    def model_config(self, name: str) -> RewardModelConfig:
        """`models[name]` as a checked config (defaults when the mix gives none)."""
        section = self.models.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"rewards.models.{name}: must be a mapping of path, device, dtype, batch_size")
        unknown = set(section) - {f.name for f in fields(RewardModelConfig)}
        if unknown:
            allowed = ", ".join(f.name for f in fields(RewardModelConfig))
            raise ValueError(f"rewards.models.{name}: unknown {sorted(unknown)[0]!r}; allowed: {allowed}")
        try:
            return RewardModelConfig(**section)
        except ValueError as error:
            raise ValueError(f"rewards.models.{name}.{error}") from None

    @property
    def scored(self) -> list[str]:
        """Every reward the mix scores: those it trains on, then those it monitors."""
        return [*self.weights, *self.monitor]


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
    """Weighted rewards and their group advantages; monitored rewards are scored alongside, unweighted."""

    def __init__(self, rewards: dict[str, Reward], config: RewardMixConfig) -> None:
        missing = [name for name in config.scored if name not in rewards]
        if missing:
            raise ValueError(f"rewards.weights: unknown reward {missing[0]!r}; known: {', '.join(sorted(rewards))}")
        self.rewards = {name: rewards[name] for name in config.weights}
        self.monitored = {name: rewards[name] for name in config.monitor}
        self.config = config
        self.seconds: dict[str, float] = {}

    def score(self, images: np.ndarray, prompts: list[str]) -> dict[str, np.ndarray]:
        """Scores [B] per reward, trained-on and monitored (oriented so higher is better); the seconds each
        took are left in `seconds` (what the job's time split shows per reward)."""
        scores = {}
        for name, reward in {**self.rewards, **self.monitored}.items():
            started = time.perf_counter()
            scores[name] = score_checked(reward, images, prompts)
            self.seconds[name] = time.perf_counter() - started
        return scores

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
