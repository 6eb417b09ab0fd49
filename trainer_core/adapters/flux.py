"""Adapter for FLUX.1 (`FluxPipeline`), dev or schnell, from a local directory.

FLUX's transformer predicts the rectified-flow velocity eps - x0 at sigma = t, as SD3's does. It reads
latents packed into 2x2 patches ([B, C, H, W] -> [B, H/2 * W/2, 4 C]); the adapter keeps latents unpacked
so that the algorithms see [B, C, H, W] like every other family, and packs around each call. dev takes
its guidance as an input (the distilled guidance, 3.5 by default), not by classifier-free guidance;
schnell takes none. Its sampling grid is time-shifted by exp(mu), mu growing with the image's token count
(the scheduler's dynamic shifting). T5 may be left out of the directory: its states are then zeros.

Kohya-named exports use Black Forest Labs' names (`double_blocks.{i}.img_attn.qkv`,
`single_blocks.{i}.linear1`), which ComfyUI keys FLUX LoRAs by; there q, k, v (and, in single blocks, the
MLP's input) are one fused weight.
"""

from __future__ import annotations

import math
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

#: dev's guidance input when none is given (the pipeline's default)
DEFAULT_EMBEDDED_GUIDANCE = 3.5
#: latent side at the native resolution (1024 px through FLUX's 8x VAE)
NATIVE_LATENT_SIDE = 128


class FluxAdapter(DenoiserAdapter):
    default_guidance = 1.0

    def __init__(self, pipe, resolution: int | None = None, max_sequence_length: int = 512) -> None:
        self.pipe = pipe
        self.denoiser = pipe.transformer
        self.max_sequence_length = max_sequence_length
        self.embedded_guidance = DEFAULT_EMBEDDED_GUIDANCE if pipe.transformer.config.guidance_embeds else None
        for module in (*self.text_encoders(), *self.image_decoders()):
            module.requires_grad_(False).eval()
        side = resolution or NATIVE_LATENT_SIDE * pipe.vae_scale_factor
        self._latent_side = 2 * (side // (pipe.vae_scale_factor * 2))
        self.time_shift = self._time_shift()

    def _time_shift(self) -> float:
        config = self.pipe.scheduler.config
        if not config.get("use_dynamic_shifting", False):
            return float(config.get("shift", 1.0))
        tokens = (self._latent_side // 2) ** 2
        base, most = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
        low, high = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
        mu = low + (high - low) * (tokens - base) / (most - base)
        return math.exp(mu)  # exp(mu) / (exp(mu) + 1 / t - 1) is the SD3 shift by exp(mu)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return (int(self.denoiser.config.in_channels) // 4, self._latent_side, self._latent_side)

    def text_encoders(self) -> list[torch.nn.Module]:
        return [m for m in (self.pipe.text_encoder, self.pipe.text_encoder_2) if m is not None]

    def image_decoders(self) -> list[torch.nn.Module]:
        return [self.pipe.vae]

    def _encode_prompts(self, prompts: list[str]) -> PromptEmbeddings:
        if self.pipe.text_encoder_2 is not None:
            states, pooled, _ = self.pipe.encode_prompt(
                prompts, device=self.device, max_sequence_length=self.max_sequence_length
            )
        else:
            pooled = self.pipe._get_clip_prompt_embeds(prompts, device=self.device)
            width = int(self.denoiser.config.joint_attention_dim)
            states = torch.zeros(len(prompts), self.max_sequence_length, width, device=self.device)
        extra = {}
        if self.embedded_guidance is not None:
            extra["guidance"] = torch.full((len(prompts),), self.embedded_guidance, device=self.device)
        return PromptEmbeddings(states.to(self.dtype), pooled.to(self.dtype), extra)

    def velocity(self, z: torch.Tensor, t: torch.Tensor, embeddings: PromptEmbeddings) -> torch.Tensor:
        batch, channels, height, width = z.shape
        packed = z.view(batch, channels, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
        packed = packed.reshape(batch, (height // 2) * (width // 2), channels * 4)
        image_ids = self.pipe._prepare_latent_image_ids(batch, height // 2, width // 2, z.device, z.dtype)
        text_ids = torch.zeros(embeddings.states.shape[1], 3, device=z.device, dtype=z.dtype)
        output = self.denoiser(
            hidden_states=packed,
            timestep=t.to(z.dtype),
            guidance=embeddings.extra.get("guidance"),
            pooled_projections=embeddings.pooled,
            encoder_hidden_states=embeddings.states,
            txt_ids=text_ids,
            img_ids=image_ids,
            return_dict=False,
        )[0]  # [B, H/2 * W/2, 4 C]
        unpacked = output.view(batch, height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return unpacked.reshape(batch, channels, height, width)

    def _decode(self, latents: torch.Tensor) -> np.ndarray:
        return vae_decode(self.pipe.vae, latents)


def _load(path: Path, device: torch.device, resolution: int | None) -> FluxAdapter:
    optional = ("text_encoder_2", "tokenizer_2", "image_encoder", "feature_extractor")
    return FluxAdapter(load_pipeline("FluxPipeline", path, device, optional), resolution)


#: BFL's double block, by the names of its weights, and the diffusers modules stacked in each
DOUBLE_BLOCK: BlockLayout = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "img_attn.proj": ("attn.to_out.0",),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "txt_attn.proj": ("attn.to_add_out",),
    "img_mlp.0": ("ff.net.0.proj",),
    "img_mlp.2": ("ff.net.2",),
    "txt_mlp.0": ("ff_context.net.0.proj",),
    "txt_mlp.2": ("ff_context.net.2",),
    "img_mod.lin": ("norm1.linear",),
    "txt_mod.lin": ("norm1_context.linear",),
}
#: BFL's single block: q, k, v and the MLP's input are one weight, the attention and MLP outputs another
SINGLE_BLOCK: BlockLayout = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"),
    "linear2": ("proj_out",),
    "modulation.lin": ("norm.linear",),
}


def _kohya_target(path: str) -> KohyaTarget:
    blocks = {
        "transformer_blocks": ("double_blocks", DOUBLE_BLOCK),
        "single_transformer_blocks": ("single_blocks", SINGLE_BLOCK),
    }
    return block_kohya_target("FLUX", path, blocks)


FAMILY = ModelFamily(
    name="flux",
    title="FLUX.1 (dev, schnell)",
    pipelines=("FluxPipeline",),
    load=_load,
    adapter=FluxAdapter,
    lora_targets=JOINT_ATTENTION,
    rollout=RolloutDefaults(resolution=512, steps=16, guidance_scale=1.0),
    denoiser_component="transformer",
    kohya_target=_kohya_target,
    memory=MemoryOptions(gradient_checkpointing=True, offload=True, decode_batch=2),
)
