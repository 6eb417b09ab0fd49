"""Built-in rewards that need no weights: the shapes world's checks and JPEG (in)compressibility."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from trainer_core.rewards.base import Reward
from trainer_core.shapes.grammar import parse_prompt
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


def builtin_rewards() -> dict[str, Reward]:
    shared = ShapesScores()
    rewards: dict[str, Reward] = {name: ShapesReward(name, shared) for name in SCORE_NAMES}
    for reward in (JpegCompressibility(False), JpegCompressibility(True)):
        rewards[reward.name] = reward
    return rewards
