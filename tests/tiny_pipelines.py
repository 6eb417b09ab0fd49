"""Tiny, randomly initialised pipelines of every supported family, saved the way the real weights are
(in the style of diffusers' own `get_dummy_components`), so that they load through the same path."""

from __future__ import annotations

from pathlib import Path

import torch

from trainer_core.real_sizes import synthetic_clip_tokenizer


def clip_tokenizer(folder: Path, max_length: int = 16):
    return synthetic_clip_tokenizer(folder, max_length)


def clip_config(hidden: int = 32, projection: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        hidden_size=hidden,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=60,
        projection_dim=projection,
        max_position_embeddings=16,
    )


def vae(latent_channels: int = 4, **kwargs):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 8),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=latent_channels,
        norm_num_groups=1,
        **kwargs,
    )


def tiny_sd15(root: Path, prediction_type: str = "epsilon") -> str:
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
        attention_head_dim=4,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=vae(scaling_factor=0.18215),
        text_encoder=CLIPTextModel(clip_config()),
        tokenizer=clip_tokenizer(root / "tokenizer"),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    path = root / f"tiny-sd15-{prediction_type}"
    pipe.save_pretrained(path)
    return str(path)


def tiny_sdxl(root: Path) -> str:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six size numbers, then the pooled text
        cross_attention_dim=64,  # both encoders' states side by side
        norm_num_groups=2,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1
    )
    pipe = StableDiffusionXLPipeline(
        unet=unet,
        scheduler=scheduler,
        vae=vae(scaling_factor=0.13025),
        text_encoder=CLIPTextModel(clip_config()),
        tokenizer=clip_tokenizer(root / "tokenizer"),
        text_encoder_2=CLIPTextModelWithProjection(clip_config()),
        tokenizer_2=clip_tokenizer(root / "tokenizer_2"),
    )
    path = root / "tiny-sdxl"
    pipe.save_pretrained(path)
    return str(path)


def tiny_sd3(root: Path) -> str:
    """No T5, as SD3 may be run without it."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextModelWithProjection

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
        dual_attention_layers=(0,),  # SD3.5's second attention in the first block
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        vae=vae(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        text_encoder=CLIPTextModelWithProjection(clip_config()),
        tokenizer=clip_tokenizer(root / "tok1"),
        text_encoder_2=CLIPTextModelWithProjection(clip_config()),
        tokenizer_2=clip_tokenizer(root / "tok2"),
        text_encoder_3=None,
        tokenizer_3=None,
    )
    path = root / "tiny-sd3"
    pipe.save_pretrained(path)
    return str(path)


def tiny_flux(root: Path, guidance_embeds: bool = True, t5: bool = True) -> str:
    """dev (guidance embedded) or schnell; the T5 is a tiny T5 encoder read through a CLIP tokenizer (no
    SentencePiece model can be built offline), or left out."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=(4, 4, 8),
        guidance_embeds=guidance_embeds,
    )
    t5_encoder = T5EncoderModel(
        T5Config(vocab_size=60, d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4, pad_token_id=1)
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=guidance_embeds, base_shift=0.5, max_shift=1.15, shift=1.0
    )
    pipe = FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=vae(
            latent_channels=4,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.1159,
            scaling_factor=0.3611,
        ),
        text_encoder=CLIPTextModel(clip_config()),
        tokenizer=clip_tokenizer(root / "tokenizer"),
        text_encoder_2=t5_encoder if t5 else None,
        tokenizer_2=clip_tokenizer(root / "tokenizer_2", max_length=32) if t5 else None,
    )
    path = root / f"tiny-flux-{'dev' if guidance_embeds else 'schnell'}{'' if t5 else '-no-t5'}"
    pipe.save_pretrained(path)
    return str(path)


CLIP_WORDS = ["[PAD]", "[UNK]", "a", "red", "blue", "green", "circle", "square", "triangle", "two", "left", "of"]


def tiny_clip_model(path: Path, projection_dim: int = 8) -> str:
    """A tiny random transformers CLIPModel with its image processor and tokenizer, in the layout of a real
    CLIP or PickScore directory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(CLIP_WORDS),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 16,
            "pad_token_id": 0,
            "bos_token_id": 0,
            "eos_token_id": 1,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=projection_dim,
    )
    CLIPModel(config).eval().save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    word_level = Tokenizer(models.WordLevel({w: i for i, w in enumerate(CLIP_WORDS)}, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=word_level, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(path)
    return str(path)
