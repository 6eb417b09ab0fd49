"""The published denoiser configs of the real models, so that their full-size architectures can be built
(on the `meta` device, or with random weights) without downloading anything: for checking names and
shapes against what other tools expect, and for measuring time and memory at real size."""

from __future__ import annotations

import torch

#: name -> (family, diffusers class, config), as in each model's `unet/` or `transformer/config.json`
REAL_DENOISERS: dict[str, tuple[str, str, dict[str, object]]] = {
    "sd15": (
        "sd15",
        "UNet2DConditionModel",
        {
            "sample_size": 64,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": [320, 640, 1280, 1280],
            "layers_per_block": 2,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
            "norm_num_groups": 32,
        },
    ),
    "sdxl": (
        "sdxl",
        "UNet2DConditionModel",
        {
            "sample_size": 128,
            "in_channels": 4,
            "out_channels": 4,
            "block_out_channels": [320, 640, 1280],
            "layers_per_block": 2,
            "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
            "transformer_layers_per_block": [1, 2, 10],
            "attention_head_dim": [5, 10, 20],
            "cross_attention_dim": 2048,
            "use_linear_projection": True,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 256,
            "projection_class_embeddings_input_dim": 2816,
        },
    ),
    "sd3.5-medium": (
        "sd3",
        "SD3Transformer2DModel",
        {
            "sample_size": 128,
            "patch_size": 2,
            "in_channels": 16,
            "out_channels": 16,
            "num_layers": 24,
            "attention_head_dim": 64,
            "num_attention_heads": 24,
            "joint_attention_dim": 4096,
            "caption_projection_dim": 1536,
            "pooled_projection_dim": 2048,
            "pos_embed_max_size": 384,
            "dual_attention_layers": list(range(13)),
            "qk_norm": "rms_norm",
        },
    ),
    "flux-dev": (
        "flux",
        "FluxTransformer2DModel",
        {
            "patch_size": 1,
            "in_channels": 64,
            "num_layers": 19,
            "num_single_layers": 38,
            "attention_head_dim": 128,
            "num_attention_heads": 24,
            "joint_attention_dim": 4096,
            "pooled_projection_dim": 768,
            "guidance_embeds": True,
            "axes_dims_rope": [16, 56, 56],
        },
    ),
}


def real_denoiser(
    name: str, device: str | torch.device = "meta", dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """The full-size denoiser `name` (sd15, sdxl, sd3.5-medium, flux-dev) with random weights, or none on
    the meta device."""
    if name not in REAL_DENOISERS:
        raise ValueError(f"model config: unknown {name!r}; allowed: {', '.join(REAL_DENOISERS)}")
    import diffusers

    _, class_name, config = REAL_DENOISERS[name]
    with torch.device(device):
        return getattr(diffusers, class_name).from_config(config).to(dtype)
