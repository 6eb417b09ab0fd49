"""Adapter for Stable Diffusion XL (`StableDiffusionXLPipeline`): two text encoders, pooled embeddings and
size conditioning, on the same variance-preserving-to-flow map as SD1.5 (`stable_diffusion`)."""

from __future__ import annotations

from pathlib import Path

import torch

from trainer_core.adapters.base import MemoryOptions, PromptEmbeddings, load_pipeline
from trainer_core.adapters.family import ModelFamily, RolloutDefaults, kohya_unet_target
from trainer_core.adapters.stable_diffusion import UNET_ATTENTION, StableDiffusionAdapter


class StableDiffusionXLAdapter(StableDiffusionAdapter):
    def text_encoders(self) -> list[torch.nn.Module]:
        return [m for m in (self.pipe.text_encoder, self.pipe.text_encoder_2) if m is not None]

    def _encode_prompts(self, prompts: list[str]) -> PromptEmbeddings:
        states, _, pooled, _ = self.pipe.encode_prompt(prompts, device=self.device, do_classifier_free_guidance=False)
        # size conditioning: generated at this size, uncropped, for this size
        side = self._latent_side * self.pipe.vae_scale_factor
        encoder_2 = self.pipe.text_encoder_2
        time_ids = self.pipe._get_add_time_ids(
            (side, side),
            (0, 0),
            (side, side),
            dtype=states.dtype,
            text_encoder_projection_dim=int(encoder_2.config.projection_dim) if encoder_2 is not None else None,
        )
        extra = {"time_ids": time_ids.to(self.device).expand(len(prompts), -1)}
        return PromptEmbeddings(states.to(self.dtype), pooled.to(self.dtype), extra)

    def unet_output(self, z: torch.Tensor, tau: torch.Tensor, embeddings: PromptEmbeddings) -> torch.Tensor:
        conditions = {"text_embeds": embeddings.pooled, "time_ids": embeddings.extra["time_ids"]}
        return self.denoiser(
            z, tau.to(z.dtype), encoder_hidden_states=embeddings.states, added_cond_kwargs=conditions
        ).sample


def _load(path: Path, device: torch.device, resolution: int | None) -> StableDiffusionXLAdapter:
    return StableDiffusionXLAdapter(load_pipeline("StableDiffusionXLPipeline", path, device), resolution)


FAMILY = ModelFamily(
    name="sdxl",
    title="Stable Diffusion XL",
    pipelines=("StableDiffusionXLPipeline",),
    load=_load,
    adapter=StableDiffusionXLAdapter,
    lora_targets=UNET_ATTENTION,
    rollout=RolloutDefaults(resolution=None, steps=20, guidance_scale=5.0),
    denoiser_component="unet",
    kohya_target=kohya_unet_target,
    memory=MemoryOptions(gradient_checkpointing=True, offload=True, decode_batch=4),
)
