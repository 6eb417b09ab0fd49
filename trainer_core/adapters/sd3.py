"""Adapter for Stable Diffusion 3 / 3.5 (`StableDiffusion3Pipeline`) from a local directory.

The flow runs in the VAE's latent space: SD3's MMDiT predicts velocity
eps - x0 at sigma = t, exactly the rectified-flow convention of METHOD.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from trainer_core.adapters.base import DenoiserAdapter, PromptEmbeddings


class SD3Adapter(DenoiserAdapter):
    default_guidance = 1.0  # V-GRPO's SD3.5-M runs use no CFG in rollouts or training

    def __init__(self, pipe, resolution: int | None = None) -> None:
        self.pipe = pipe
        self.denoiser = pipe.transformer
        self.time_shift = float(pipe.scheduler.config.get("shift", 3.0))
        for encoder in (pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3, pipe.vae):
            if encoder is not None:
                encoder.requires_grad_(False).eval()
        sample_size = int(pipe.transformer.config.sample_size)
        self._latent_side = sample_size if resolution is None else resolution // pipe.vae_scale_factor

    @classmethod
    def from_pretrained(cls, path: Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> SD3Adapter:
        from diffusers import StableDiffusion3Pipeline

        # Optional parts (T5, IP-adapter) may be absent from the directory: load them as None.
        index = json.loads((Path(path) / "model_index.json").read_text())
        absent = {
            name: None
            for name in ("text_encoder_3", "tokenizer_3", "image_encoder", "feature_extractor")
            if index.get(name) in (None, [None, None])
        }
        pipe = StableDiffusion3Pipeline.from_pretrained(path, dtype=dtype, local_files_only=True, **absent)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe.to(device))

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (int(self.denoiser.config.in_channels), self._latent_side, self._latent_side)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> PromptEmbeddings:
        states, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, prompt_2=None, prompt_3=None, device=self.device, do_classifier_free_guidance=False
        )
        return PromptEmbeddings(states.to(self.dtype), pooled.to(self.dtype))

    def velocity(self, z: torch.Tensor, t: torch.Tensor, embeddings: PromptEmbeddings) -> torch.Tensor:
        return self.denoiser(
            hidden_states=z,
            timestep=t * 1000,
            encoder_hidden_states=embeddings.states,
            pooled_projections=embeddings.pooled,
        ).sample

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        vae = self.pipe.vae
        scaled = latents.to(vae.dtype) / vae.config.scaling_factor + (vae.config.shift_factor or 0.0)
        images = vae.decode(scaled).sample
        pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return pixels.permute(0, 2, 3, 1).cpu().numpy()
