"""The LAION aesthetic predictor v2 ("improved aesthetic predictor"): an MLP on CLIP ViT-L/14's
normalised image embedding, trained on SAC, LAION-Logos and AVA ratings (1-10).

score = MLP(e(image) / |e(image)|), the MLP being Linear(768, 1024) - Linear(1024, 128) - Linear(128, 64)
- Linear(64, 16) - Linear(16, 1) (dropout between the first four, off in inference). The prompt is not
used. The MLP file is read as a state dict only (`torch.load(weights_only=True)`, or safetensors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from trainer_core.rewards.base import Reward, RewardModelConfig
from trainer_core.rewards.clip_score import CLIP_FILES, shared_clip
from trainer_core.rewards.registry import RewardSpec

MLP_FILE = "sac+logos+ava1-l14-linearMSE.pth"
WIDTHS = (1024, 128, 64, 16, 1)


def aesthetic_mlp(embedding_dim: int) -> torch.nn.Sequential:
    """The predictor's layers, named as in its published state dict (`layers.0`, `layers.2`, ...)."""
    return torch.nn.Sequential(
        torch.nn.Linear(embedding_dim, WIDTHS[0]),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(WIDTHS[0], WIDTHS[1]),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(WIDTHS[1], WIDTHS[2]),
        torch.nn.Dropout(0.1),
        torch.nn.Linear(WIDTHS[2], WIDTHS[3]),
        torch.nn.Linear(WIDTHS[3], WIDTHS[4]),
    )


class AestheticScore(Reward):
    name = "aesthetic"

    def __init__(self, path: Path, config: RewardModelConfig, shared: dict[str, Any]) -> None:
        self.clip = shared_clip(path / "clip", config, shared)
        weights_file = path / MLP_FILE
        state = (
            load_file(str(weights_file))
            if weights_file.suffix == ".safetensors"
            else torch.load(weights_file, map_location="cpu", weights_only=True)
        )
        state = {k.removeprefix("layers."): v for k, v in state.items()}
        self.mlp = aesthetic_mlp(int(state["0.weight"].shape[1]))
        self.mlp.load_state_dict(state)
        self.mlp.to(self.clip.device).eval()

    @torch.no_grad()
    def score(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        image, _ = self.clip.embed(images, prompts)  # normalised
        return self.mlp(image.float()).squeeze(-1).cpu().numpy().astype(np.float64)


REWARDS = (
    RewardSpec(
        "aesthetic",
        "any model: the LAION aesthetic predictor v2 (1-10, prompt unused)",
        lambda config, path, shared: AestheticScore(path, config, shared),  # type: ignore[arg-type]
        weights=f"a folder with clip/ (openai/clip-vit-large-patch14) and {MLP_FILE} "
        "(christophschuhmann/improved-aesthetic-predictor)",
        files=(*(f"clip/{name}" for name in CLIP_FILES), MLP_FILE),
    ),
)
