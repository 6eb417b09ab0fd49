"""Built-in rewards that need no weights: the shapes world's checks and JPEG (in)compressibility."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from trainer_core.rewards.base import Reward
from trainer_core.rewards.registry import RewardModelConfig, RewardSpec, build_rewards
from trainer_core.shapes.grammar import PromptError, parse_prompt
from trainer_core.shapes.scoring import SCORE_NAMES, score_images


class ShapesScores:
    """All shapes scores from one detector pass per image, shared by the shapes rewards of a mix."""

    def __init__(self) -> None:
        self._cache_key: int | None = None
        self._cache: list[dict[str, float]] = []

    def all(self, images: np.ndarray, prompts: list[str]) -> list[dict[str, float]]:
        key = hash((images.tobytes(), tuple(prompts)))
        if key != self._cache_key:
            self._cache = score_images(images, [parse_prompt(p) for p in prompts])
            self._cache_key = key
        return self._cache


class ShapesReward(Reward):
    """One of the shapes world's verifiable scores (geneval, partial, count, color, position)."""

    def __init__(self, name: str, shared: ShapesScores | None = None) -> None:
        if name not in SCORE_NAMES:
            raise ValueError(f"reward: shapes rewards are {', '.join(SCORE_NAMES)}, got {name!r}")
        self.name = name
        self.shared = shared or ShapesScores()

    def score(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        return np.array([s[self.name] for s in self.shared.all(images, prompts)])


class JpegCompressibility(Reward):
    """Negative JPEG size in kB at quality 95: higher means more compressible (DDPO's reward)."""

    def __init__(self, incompressible: bool = False, quality: int = 95) -> None:
        self.name = "jpeg_incompressibility" if incompressible else "jpeg_compressibility"
        self.sign = 1.0 if incompressible else -1.0
        self.quality = quality

    def score(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        sizes = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="JPEG", quality=self.quality)
            sizes.append(buffer.tell() / 1000)
        return self.sign * np.asarray(sizes)


SHAPES_DESCRIPTIONS = {
    "geneval": "shapes world: 1 when the image shows exactly what the prompt asks (objects, counts, colours, places)",
    "partial": "shapes world: the mean of count, color and position (1 exactly when geneval is 1)",
    "count": "shapes world: 1 minus the objects too many or too few per shape, over those asked for",
    "color": "shapes world: the objects of the right shape and colour, over those asked for",
    "position": "shapes world: the share of object pairs in the asked relation (1 without one)",
}


def _shapes_spec(name: str) -> RewardSpec:
    def build(config: RewardModelConfig, path: Path | None, shared: dict[str, Any]) -> Reward:
        return ShapesReward(name, shared.setdefault("shapes", ShapesScores()))  # one detector pass per image

    return RewardSpec(name, SHAPES_DESCRIPTIONS[name], build, prompt_problem=_shapes_prompt_problem)


def _shapes_prompt_problem(prompt: str) -> str:
    try:
        parse_prompt(prompt)
    except PromptError as error:
        return f"not a shapes prompt ({error.rule()})"
    return ""


REWARDS = (
    *(_shapes_spec(name) for name in SCORE_NAMES),
    RewardSpec(
        "jpeg_compressibility",
        "any model: smaller JPEG files (DDPO's compressibility)",
        lambda config, path, shared: JpegCompressibility(False),
    ),
    RewardSpec(
        "jpeg_incompressibility",
        "any model: larger JPEG files, more detail (DDPO's incompressibility)",
        lambda config, path, shared: JpegCompressibility(True),
    ),
)


def builtin_rewards() -> dict[str, Reward]:
    """Every reward that needs no weights, built."""
    return build_rewards([spec.name for spec in REWARDS])
