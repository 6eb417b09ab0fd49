"""Adapter for Stable Diffusion 3 / 3.5 (`StableDiffusion3Pipeline`) from a local directory.

The flow runs in the VAE's latent space: SD3's MMDiT predicts velocity
eps - x0 at sigma = t, exactly the rectified-flow convention of docs/method.md.

Kohya-named exports use the names of Stability's original MMDiT checkpoint (`joint_blocks.{i}.x_block...`),
which ComfyUI and AUTOMATIC1111 key their SD3 LoRAs by; there q, k and v are one fused `qkv` weight.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from trainer_core.adapters.base import DenoiserAdapter, MemoryOptions, PromptEmbeddings, load_pipeline, vae_decode
from trainer_core.adapters.family import (
    JOINT_ATTENTION,
    BlockLayout,
    KohyaTarget,
    ModelFamily,
    RolloutDefaults,
    block_kohya_target,
)


class SD3Adapter(DenoiserAdapter):
    default_guidance = 1.0  # V-GRPO's SD3.5-M runs use no CFG in rollouts or training

    def __init__(self, pipe, resolution: int | None = None) -> None:
        self.pipe = pipe
        self.denoiser = pipe.transformer
        self.time_shift = float(pipe.scheduler.config.get("shift", 3.0))
        for module in (*self.text_encoders(), *self.image_decoders()):
            module.requires_grad_(False).eval()
        sample_size = int(pipe.transformer.config.sample_size)
        self._latent_side = sample_size if resolution is None else resolution // pipe.vae_scale_factor

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (int(self.denoiser.config.in_channels), self._latent_side, self._latent_side)

    def text_encoders(self) -> list[torch.nn.Module]:
        encoders = (self.pipe.text_encoder, self.pipe.text_encoder_2, self.pipe.text_encoder_3)
        return [m for m in encoders if m is not None]

    def image_decoders(self) -> list[torch.nn.Module]:
        return [self.pipe.vae]

    def _encode_prompts(self, prompts: list[str]) -> PromptEmbeddings:
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

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        return vae_decode(self.pipe.vae, latents)


def _load(path: Path, device: torch.device, resolution: int | None) -> SD3Adapter:
    optional = ("text_encoder_3", "tokenizer_3", "image_encoder", "feature_extractor")
    return SD3Adapter(load_pipeline("StableDiffusion3Pipeline", path, device, optional), resolution)


#: a joint block of Stability's MMDiT, by the names of its weights, and the diffusers modules in each
JOINT_BLOCK: BlockLayout = {
    "x_block.attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "x_block.attn.proj": ("attn.to_out.0",),
    "context_block.attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "context_block.attn.proj": ("attn.to_add_out",),
    "x_block.attn2.qkv": ("attn2.to_q", "attn2.to_k", "attn2.to_v"),  # SD3.5's second attention
    "x_block.attn2.proj": ("attn2.to_out.0",),
    "x_block.mlp.fc1": ("ff.net.0.proj",),
    "x_block.mlp.fc2": ("ff.net.2",),
    "context_block.mlp.fc1": ("ff_context.net.0.proj",),
    "context_block.mlp.fc2": ("ff_context.net.2",),
}


def _kohya_target(path: str) -> KohyaTarget:
    return block_kohya_target("SD3", path, {"transformer_blocks": ("joint_blocks", JOINT_BLOCK)})


FAMILY = ModelFamily(
    name="sd3",
    title="Stable Diffusion 3 / 3.5",
    pipelines=("StableDiffusion3Pipeline",),
    load=_load,
    adapter=SD3Adapter,
    lora_targets=JOINT_ATTENTION,
    rollout=RolloutDefaults(resolution=512, steps=40, guidance_scale=1.0),
    denoiser_component="transformer",
    kohya_target=_kohya_target,
    memory=MemoryOptions(gradient_checkpointing=True, offload=True, decode_batch=4),
)
