"""PickScore (Kirstain et al., 2023): a CLIP-H fine-tuned on Pick-a-Pic's human preferences.

score = logit_scale.exp() * cos(e(image), e(prompt)), the reference implementation's formula: the
logits whose softmax over images of one prompt is the predicted preference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer_core.rewards.base import Reward, RewardModelConfig
from trainer_core.rewards.clip_score import CLIP_FILES, ClipSimilarity, shared_clip
from trainer_core.rewards.registry import RewardSpec


def _build(config: RewardModelConfig, path: Path | None, shared: dict[str, Any]) -> Reward:
    assert path is not None
    clip = shared_clip(path, config, shared)
    return ClipSimilarity("pickscore", clip, lambda model: model.model.logit_scale.detach().exp().item())


REWARDS = (
    RewardSpec(
        "pickscore",
        "any model: PickScore, human preference between images of one prompt (Pick-a-Pic)",
        _build,
        weights="PickScore's model and processor in one directory (yuvalkirstain/PickScore_v1 with the "
        "processor of laion/CLIP-ViT-H-14-laion2B-s32B-b79K)",
        files=CLIP_FILES,
    ),
)
