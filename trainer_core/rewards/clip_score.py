"""CLIPScore: how well an image matches its prompt, as one CLIP model sees both.

score = cos(e(image), e(prompt)), the normalised projected embeddings of a transformers `CLIPModel`
(CLIPScore's own 2.5 * max(cos, 0) is a monotone rescaling of it; the cosine keeps its sign).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer_core.preference.clip_features import ClipFeatures
from trainer_core.rewards.base import Reward, RewardModelConfig
from trainer_core.rewards.registry import RewardSpec

CLIP_FILES = ("config.json", "preprocessor_config.json")


def shared_clip(path: Path, config: RewardModelConfig, shared: dict[str, Any]) -> ClipFeatures:
    """The CLIP model at `path`, loaded once per mix; every CLIP of a mix shares preprocessed pixels."""
    key = f"clip:{path.resolve()}:{config.device}:{config.dtype}"
    if key not in shared:
        shared[key] = ClipFeatures(
            str(path),
            str(config.torch_device()),
            config.batch_size,
            config.torch_dtype(),
            pixel_cache=shared.setdefault("clip_pixels", {}),
        )
    return shared[key]


class ClipSimilarity(Reward):
    """scale(model) * cos(image, prompt) of one CLIP model."""

    def __init__(self, name: str, clip: ClipFeatures, scale: Callable[[ClipFeatures], float] = lambda clip: 1.0):
        self.name, self.clip, self.scale = name, clip, scale(clip)

    @torch.no_grad()
    def score(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        image, text = self.clip.embed(images, prompts)
        return (self.scale * (image * text).sum(-1)).cpu().numpy().astype(np.float64)


def _build(config: RewardModelConfig, path: Path | None, shared: dict[str, Any]) -> Reward:
    assert path is not None
    return ClipSimilarity("clip_score", shared_clip(path, config, shared))


REWARDS = (
    RewardSpec(
        "clip_score",
        "any model: the cosine of CLIP's image and prompt embeddings (CLIPScore)",
        _build,
        weights="a transformers CLIPModel directory (model, image processor, tokenizer), e.g. "
        "openai/clip-vit-large-patch14",
        files=CLIP_FILES,
    ),
)
