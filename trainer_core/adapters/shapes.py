"""Adapter for the built-in shapes model: the flow runs directly on pixels in [-1, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trainer_core.adapters.base import DenoiserAdapter, MemoryOptions, PromptEmbeddings, to_uint8
from trainer_core.adapters.family import ModelFamily, RolloutDefaults, kohya_unet_target
from trainer_core.shapes.pipeline import ShapesPipeline


class ShapesAdapter(DenoiserAdapter):
    def __init__(self, pipe: ShapesPipeline) -> None:
        self.pipe = pipe
        self.denoiser = pipe.unet
        self.time_shift = float(pipe.scheduler.config.get("shift", 1.0))
        pipe.text_encoder.requires_grad_(False).eval()

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (3, self.pipe.resolution, self.pipe.resolution)

    def text_encoders(self) -> list[torch.nn.Module]:
        return [self.pipe.text_encoder]

    def _encode_prompts(self, prompts: list[str]) -> PromptEmbeddings:
        states, pooled = self.pipe.encode_prompt(prompts)
        return PromptEmbeddings(states, pooled)

    def velocity(self, z: torch.Tensor, t: torch.Tensor, embeddings: PromptEmbeddings) -> torch.Tensor:
        return self.pipe.velocity(z, t, embeddings.states, embeddings.pooled)

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        return to_uint8(latents)


def _load(path: Path, device: torch.device, resolution: int | None) -> ShapesAdapter:
    from trainer_core.model_zoo import load_shapes_pipeline

    return ShapesAdapter(load_shapes_pipeline(str(path), device))


FAMILY = ModelFamily(
    name="shapes",
    title="Built-in shapes model (32 px, pixel space)",
    pipelines=("ShapesPipeline",),
    load=_load,
    adapter=lambda pipe, resolution: ShapesAdapter(pipe),
    lora_targets=(
        "to_q",
        "to_k",
        "to_v",
        "to_out.0",
        "ff.net.0.proj",
        "ff.net.2",
        "proj_in",
        "proj_out",
        "conv1",
        "conv2",
    ),
    rollout=RolloutDefaults(resolution=None, steps=8, guidance_scale=1.0),
    denoiser_component="unet",
    kohya_target=kohya_unet_target,
    memory=MemoryOptions(),
)
