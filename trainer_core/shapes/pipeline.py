"""The built-in base model: a tiny SD3-style rectified-flow pipeline over pixels.

Components, all stock diffusers / transformers classes as in SD1.5 and SD3:

- `unet`: `UNet2DConditionModel` predicting velocity v ~ eps - x0 on
  3-channel pixels (no VAE), with cross-attention to the prompt at the coarse
  levels, where composition is decided; optionally (as SDXL, SD3 and FLUX) the
  pooled prompt embedding modulating every ResNet through the timestep
  embedding, and x, y coordinate planes as extra inputs (the role of SD3's
  and FLUX's positional embeddings);
- `text_encoder`: `CLIPTextModel`, whose hidden states are the cross-attention
  context;
- `tokenizer`: a word-level `PreTrainedTokenizerFast` over the grammar's words;
- `scheduler`: `FlowMatchEulerDiscreteScheduler`, whose `shift` is the sigma
  grid's time shift.

Saved and loaded with diffusers' `save_pretrained` / `from_pretrained` as a
directory with `model_index.json`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, UNet2DConditionModel
from tokenizers import Tokenizer, models, pre_tokenizers
from tokenizers.processors import TemplateProcessing
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from trainer_core.shapes.grammar import vocabulary

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"


@dataclass(frozen=True)
class ShapesModelConfig:
    """Architecture of the built-in shapes model.

    resolution: image side in pixels (32).
    channels: UNet channels per level, from full resolution down (16, 32, 64, 128).
    attention_levels: how many of the coarsest levels have cross-attention to the prompt (2).
    layers_per_block: ResNet layers per level (1).
    head_dim: attention head width (16).
    text_dim: width of the text encoder and of the cross-attention context (64).
    text_layers: text encoder layers (2).
    max_tokens: prompt length after padding, BOS and EOS included (16).
    shift: time shift of the sampling sigma grid, as SD3's `shift` (1.0: none).
    pooled_modulation: the pooled prompt embedding is added to the timestep embedding and scales and
        shifts every ResNet's features (False). Cross-attention alone does not learn to place objects by
        the prompt; with this and `coordinate_channels` two prompts that differ only in "left"/"right" are
        drawn apart within 300 steps (docs/shapes-relations.md).
    coordinate_channels: two input planes holding x and y in [-1, 1], so that features know where they are
        (False).
    """

    resolution: int = 32
    channels: tuple[int, ...] = (16, 32, 64, 128)
    attention_levels: int = 2
    layers_per_block: int = 1
    head_dim: int = 16
    text_dim: int = 64
    text_layers: int = 2
    max_tokens: int = 16
    shift: float = 1.0
    pooled_modulation: bool = False
    coordinate_channels: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(self.channels))
        if self.resolution % 2 ** (len(self.channels) - 1):
            raise ValueError(
                f"resolution: must be divisible by {2 ** (len(self.channels) - 1)} for {len(self.channels)} levels, "
                f"got {self.resolution}"
            )
        if not 0 <= self.attention_levels <= len(self.channels):
            raise ValueError(f"attention_levels: must be in [0, {len(self.channels)}], got {self.attention_levels}")
        if any(c % 8 for c in self.channels):
            raise ValueError(f"channels: each must be a multiple of 8 (group norm), got {self.channels}")
        for name in ("layers_per_block", "head_dim", "text_dim", "text_layers", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.shift <= 0:
            raise ValueError(f"shift: must be positive, got {self.shift}")


def build_tokenizer(max_tokens: int) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the grammar's vocabulary: `[BOS] words [EOS] [PAD]...`."""
    vocab = {tok: i for i, tok in enumerate([PAD, UNK, BOS, EOS, *vocabulary()])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        unk_token=UNK,
        bos_token=BOS,
        eos_token=EOS,
        model_max_length=max_tokens,
    )


class ShapesPipeline(DiffusionPipeline):
    """Rectified-flow text-to-image pipeline of the shapes world (pixels in [-1, 1])."""

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(
        self,
        unet: UNet2DConditionModel,
        text_encoder: CLIPTextModel,
        tokenizer: PreTrainedTokenizerFast,
        scheduler: FlowMatchEulerDiscreteScheduler,
    ) -> None:
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)

    @property
    def resolution(self) -> int:
        return int(self.unet.config.sample_size)

    def encode_prompt(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states [B, L, D] and pooled embedding [B, D] for lower-case grammar prompts."""
        tokens = self.tokenizer(
            [p.lower() for p in prompts],
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        out = self.text_encoder(input_ids=tokens.input_ids.to(self.text_encoder.device))
        return out.last_hidden_state, out.pooler_output

    def velocity(self, z: torch.Tensor, t: torch.Tensor, states: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """v_theta(z_t, t, c) for z [B, 3, H, W] and t [B] in [0, 1] (1 = noise)."""
        config = self.unet.config
        extra = {"class_labels": pooled} if config.class_embed_type == "projection" else {}
        if config.in_channels == config.out_channels + 2:
            z = torch.cat([z, coordinate_planes(z)], dim=1)
        return self.unet(z, t * 1000, encoder_hidden_states=states, **extra).sample


def coordinate_planes(z: torch.Tensor) -> torch.Tensor:
    """[B, 2, H, W]: x and y of every pixel in [-1, 1], in z's dtype and device."""
    n, _, h, w = z.shape
    ys = torch.linspace(-1, 1, h, device=z.device, dtype=z.dtype)
    xs = torch.linspace(-1, 1, w, device=z.device, dtype=z.dtype)
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy")).expand(n, 2, h, w)


def build_shapes_pipeline(config: ShapesModelConfig, seed: int = 0) -> ShapesPipeline:
    """A randomly initialised shapes pipeline (deterministic in `seed`)."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(config.max_tokens)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=config.text_dim,
            intermediate_size=4 * config.text_dim,
            projection_dim=config.text_dim,
            num_hidden_layers=config.text_layers,
            num_attention_heads=max(1, config.text_dim // 32),
            max_position_embeddings=config.max_tokens,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    levels = len(config.channels)
    plain = levels - config.attention_levels
    unet = UNet2DConditionModel(
        sample_size=config.resolution,
        in_channels=5 if config.coordinate_channels else 3,
        out_channels=3,
        block_out_channels=config.channels,
        layers_per_block=config.layers_per_block,
        down_block_types=("DownBlock2D",) * plain + ("CrossAttnDownBlock2D",) * config.attention_levels,
        up_block_types=("CrossAttnUpBlock2D",) * config.attention_levels + ("UpBlock2D",) * plain,
        cross_attention_dim=config.text_dim,
        attention_head_dim=config.head_dim,
        norm_num_groups=8,
        **(
            {
                "class_embed_type": "projection",
                "projection_class_embeddings_input_dim": config.text_dim,
                "resnet_time_scale_shift": "scale_shift",
            }
            if config.pooled_modulation
            else {}
        ),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=config.shift)
    return ShapesPipeline(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
