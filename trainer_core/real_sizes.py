"""The published denoiser configs of the real models, so that their full-size architectures can be built
(on the `meta` device, or with random weights) without downloading anything: for checking names and
shapes against what other tools expect, and for measuring time and memory at real size."""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    with torch.device(device), default_dtype(dtype):
        return getattr(diffusers, class_name).from_config(config)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Parameters created in `dtype`: a 12B-parameter model is never held in float32 on the way to bf16."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


#: the text encoders the real pipelines ship, as transformers configs
CLIP_L = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
CLIP_G = {**CLIP_L, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32}
CLIP_G.update(num_attention_heads=20, hidden_act="gelu", projection_dim=1280)
T5_XXL = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_ff": 10240,
    "d_kv": 64,
    "num_heads": 64,
    "num_layers": 24,
    "feed_forward_proj": "gated-gelu",
}
#: the VAEs: 4 latent channels (SD1.5, SDXL) or 16 (SD3, FLUX)
VAE_4 = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 4,
    "norm_num_groups": 32,
}
VAE_16 = {**VAE_4, "latent_channels": 16, "use_quant_conv": False, "use_post_quant_conv": False}


def synthetic_clip_tokenizer(folder: Path, max_length: int):
    """A CLIP tokenizer over letters only: token ids for a random-weight text encoder, no vocabulary file
    downloaded (the ids, not the words, are what the encoder's cost depends on)."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def random_pipeline(
    name: str, device: str | torch.device, dtype: torch.dtype, t5: bool = True, folder: Path | None = None
):
    """The whole pipeline `name` at real size with random weights: denoiser, text encoders (T5-XXL left out
    when `t5` is False, as SD3 and FLUX allow), VAE and scheduler; tokenizers over letters only."""
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    folder = Path(folder or tempfile.mkdtemp(prefix="vgrpo-tokenizers-"))
    family = REAL_DENOISERS[name][0]
    denoiser = real_denoiser(name, device, dtype)

    def build(cls, config):
        with torch.device(device), default_dtype(dtype):
            return cls(config)

    def vae(config: dict[str, object], **extra: float):
        with torch.device(device), default_dtype(dtype):
            return diffusers.AutoencoderKL(**config, **extra)

    def clip_tokenizer(sub: str, length: int = 77):
        return synthetic_clip_tokenizer(folder / sub, length)

    betas = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}
    if family == "sd15":
        pipe = diffusers.StableDiffusionPipeline(
            unet=denoiser,
            vae=vae(VAE_4, scaling_factor=0.18215),
            text_encoder=build(CLIPTextModel, CLIPTextConfig(**CLIP_L)),
            tokenizer=clip_tokenizer("tokenizer"),
            scheduler=diffusers.DDIMScheduler(**betas, clip_sample=False, set_alpha_to_one=False, steps_offset=1),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    elif family == "sdxl":
        pipe = diffusers.StableDiffusionXLPipeline(
            unet=denoiser,
            vae=vae(VAE_4, scaling_factor=0.13025),
            text_encoder=build(CLIPTextModel, CLIPTextConfig(**CLIP_L)),
            tokenizer=clip_tokenizer("tokenizer"),
            text_encoder_2=build(CLIPTextModelWithProjection, CLIPTextConfig(**CLIP_G)),
            tokenizer_2=clip_tokenizer("tokenizer_2"),
            scheduler=diffusers.EulerDiscreteScheduler(**betas),
        )
    elif family == "sd3":
        pipe = diffusers.StableDiffusion3Pipeline(
            transformer=denoiser,
            vae=vae(VAE_16, scaling_factor=1.5305, shift_factor=0.0609),
            text_encoder=build(CLIPTextModelWithProjection, CLIPTextConfig(**CLIP_L)),
            tokenizer=clip_tokenizer("tokenizer"),
            text_encoder_2=build(CLIPTextModelWithProjection, CLIPTextConfig(**CLIP_G)),
            tokenizer_2=clip_tokenizer("tokenizer_2"),
            text_encoder_3=build(T5EncoderModel, T5Config(**T5_XXL)) if t5 else None,
            tokenizer_3=clip_tokenizer("tokenizer_3", 256) if t5 else None,
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0),
        )
    else:
        pipe = diffusers.FluxPipeline(
            transformer=denoiser,
            vae=vae(VAE_16, scaling_factor=0.3611, shift_factor=0.1159),
            text_encoder=build(CLIPTextModel, CLIPTextConfig(**CLIP_L)),
            tokenizer=clip_tokenizer("tokenizer"),
            text_encoder_2=build(T5EncoderModel, T5Config(**T5_XXL)) if t5 else None,
            tokenizer_2=clip_tokenizer("tokenizer_2", 512) if t5 else None,
            scheduler=diffusers.FlowMatchEulerDiscreteScheduler(
                use_dynamic_shifting=True,
                base_shift=0.5,
                max_shift=1.15,
                base_image_seq_len=256,
                max_image_seq_len=4096,
            ),
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


#: the CLIP models the learned rewards use, as transformers `CLIPConfig`s: ViT-L/14 (CLIPScore, the
#: aesthetic predictor) and ViT-H/14 (PickScore, HPSv2)
REAL_CLIPS: dict[str, dict[str, object]] = {
    "vit-l-14": {
        "text_config": {**{k: CLIP_L[k] for k in ("vocab_size", "hidden_size", "intermediate_size")},
                        "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77},
        "vision_config": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                          "num_attention_heads": 16, "image_size": 224, "patch_size": 14},
        "projection_dim": 768,
    },
    "vit-h-14": {
        "text_config": {"vocab_size": 49408, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                        "num_attention_heads": 16, "max_position_embeddings": 77, "hidden_act": "gelu"},
        "vision_config": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                          "num_attention_heads": 16, "image_size": 224, "patch_size": 14, "hidden_act": "gelu"},
        "projection_dim": 1024,
    },
}  # fmt: skip


def save_random_clip(name: str, folder: Path) -> Path:
    """A real-size CLIP (`REAL_CLIPS`) with random weights saved as a transformers directory: model, the
    OpenAI CLIP image processor (224 px) and a letters-only tokenizer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    CLIPModel(CLIPConfig(**REAL_CLIPS[name])).eval().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(folder)
    synthetic_clip_tokenizer(folder, 77).save_pretrained(folder)
    return folder


#: ImageReward's BLIP: ViT-L/16 at 224 px and BLIP's BERT-base `med_config.json`
REAL_IMAGE_REWARD: dict[str, dict[str, Any]] = {
    "vision": {"width": 1024, "layers": 24, "patch": 16, "image_size": 224, "intermediate": 4096},
    "med_config": {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
                   "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02,
                   "intermediate_size": 3072, "layer_norm_eps": 1e-12, "max_position_embeddings": 512,
                   "model_type": "bert", "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0,
                   "type_vocab_size": 2, "vocab_size": 30524, "encoder_width": 768, "add_cross_attention": True},
}  # fmt: skip


def random_image_reward_state(
    vision: dict[str, int], med_config: dict[str, Any], seed: int = 0
) -> dict[str, torch.Tensor]:
    """Random weights under the names and shapes of ImageReward's published state dict (`blip.visual_encoder`:
    BLIP's ViT; `blip.text_encoder`: its BERT with cross-attention; `mlp.layers`; the unused projections)."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.05) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    def norm(prefix: str, width: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": 1 + rand(width), f"{prefix}.bias": rand(width)}

    def linear(prefix: str, out: int, into: int) -> dict[str, torch.Tensor]:
        return {f"{prefix}.weight": rand(out, into, scale=into**-0.5), f"{prefix}.bias": rand(out)}

    w, patch = vision["width"], vision["patch"]
    v = "blip.visual_encoder"
    state = {f"{v}.cls_token": rand(1, 1, w), f"{v}.pos_embed": rand(1, (vision["image_size"] // patch) ** 2 + 1, w)}
    state |= {f"{v}.patch_embed.proj.weight": rand(w, 3, patch, patch), f"{v}.patch_embed.proj.bias": rand(w)}
    for i in range(vision["layers"]):
        b = f"{v}.blocks.{i}"
        state |= norm(f"{b}.norm1", w) | linear(f"{b}.attn.qkv", 3 * w, w) | linear(f"{b}.attn.proj", w, w)
        state |= norm(f"{b}.norm2", w) | linear(f"{b}.mlp.fc1", vision["intermediate"], w)
        state |= linear(f"{b}.mlp.fc2", w, vision["intermediate"])
    state |= norm(f"{v}.norm", w)
    h, inner, t = med_config["hidden_size"], med_config["intermediate_size"], "blip.text_encoder"
    state[f"{t}.embeddings.word_embeddings.weight"] = rand(med_config["vocab_size"], h)
    state[f"{t}.embeddings.position_embeddings.weight"] = rand(med_config["max_position_embeddings"], h)
    state[f"{t}.embeddings.position_ids"] = torch.arange(med_config["max_position_embeddings"])[None]
    state |= norm(f"{t}.embeddings.LayerNorm", h)
    for i in range(med_config["num_hidden_layers"]):
        layer = f"{t}.encoder.layer.{i}"
        for block, source in (("attention", h), ("crossattention", w)):
            state |= linear(f"{layer}.{block}.self.query", h, h)
            state |= linear(f"{layer}.{block}.self.key", h, source) | linear(f"{layer}.{block}.self.value", h, source)
            state |= linear(f"{layer}.{block}.output.dense", h, h) | norm(f"{layer}.{block}.output.LayerNorm", h)
        state |= linear(f"{layer}.intermediate.dense", inner, h) | linear(f"{layer}.output.dense", h, inner)
        state |= norm(f"{layer}.output.LayerNorm", h)
    state |= linear("blip.vision_proj", 256, w) | linear("blip.text_proj", 256, h)
    for i, (into, out) in zip((0, 2, 4, 6, 7), ((h, 1024), (1024, 128), (128, 64), (64, 16), (16, 1)), strict=True):
        state |= linear(f"mlp.layers.{i}", out, into)
    return state


def synthetic_bert_tokenizer(folder: Path, words: tuple[str, ...] = ()):
    """A bert-base-uncased style WordPiece tokenizer over letters (and `words`), no vocabulary downloaded."""
    from transformers import BertTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters), *words]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    return BertTokenizer(str(folder / "vocab.txt"))


def save_random_image_reward(
    folder: Path, vision: dict[str, int] | None = None, med_config: dict[str, Any] | None = None, seed: int = 0
) -> Path:
    """An ImageReward weights folder as published (`ImageReward.pt`, `med_config.json`) with random weights
    (real size unless told), and a letters-only BERT tokenizer in `tokenizer/`."""
    vision = vision or REAL_IMAGE_REWARD["vision"]
    med_config = med_config or REAL_IMAGE_REWARD["med_config"]
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(random_image_reward_state(vision, med_config, seed), folder / "ImageReward.pt")
    (folder / "med_config.json").write_text(json.dumps(med_config, indent=2))
    synthetic_bert_tokenizer(folder / "tokenizer").save_pretrained(folder / "tokenizer")
    return folder


def random_open_clip_state(clip: dict[str, Any], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the names and shapes of an OpenCLIP ViT state dict (HPSv2's checkpoint), the
    towers sized by a `REAL_CLIPS` entry."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    text, vision, projection = clip["text_config"], clip["vision_config"], clip["projection_dim"]
    width_t, width_v, patch = text["hidden_size"], vision["hidden_size"], vision["patch_size"]
    state = {
        "token_embedding.weight": rand(text["vocab_size"], width_t),
        "positional_embedding": rand(text["max_position_embeddings"], width_t),
        "ln_final.weight": 1 + rand(width_t),
        "ln_final.bias": rand(width_t),
        "text_projection": rand(width_t, projection),
        "logit_scale": torch.tensor(4.6),
        "visual.conv1.weight": rand(width_v, 3, patch, patch),
        "visual.class_embedding": rand(width_v),
        "visual.positional_embedding": rand((vision["image_size"] // patch) ** 2 + 1, width_v),
        "visual.ln_pre.weight": 1 + rand(width_v),
        "visual.ln_pre.bias": rand(width_v),
        "visual.ln_post.weight": 1 + rand(width_v),
        "visual.ln_post.bias": rand(width_v),
        "visual.proj": rand(width_v, projection),
    }
    for tower, config in (("transformer", text), ("visual.transformer", vision)):
        width, inner = config["hidden_size"], config["intermediate_size"]
        for i in range(config["num_hidden_layers"]):
            block = f"{tower}.resblocks.{i}"
            for name, shape in (
                ("ln_1", (width,)), ("ln_2", (width,)), ("attn.out_proj", (width, width)),
                ("mlp.c_fc", (inner, width)), ("mlp.c_proj", (width, inner)),
            ):  # fmt: skip
                state[f"{block}.{name}.weight"] = (1 + rand(width)) if name.startswith("ln") else rand(*shape)
                state[f"{block}.{name}.bias"] = rand(shape[0])
            state[f"{block}.attn.in_proj_weight"] = rand(3 * width, width)
            state[f"{block}.attn.in_proj_bias"] = rand(3 * width)
    return state
