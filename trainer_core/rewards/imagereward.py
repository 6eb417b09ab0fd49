"""ImageReward (Xu et al., 2023): BLIP fine-tuned on 137k expert comparisons of generated images.

The prompt's tokens go through BLIP's BERT-base text encoder, which cross-attends to the image's ViT-L/16
tokens; an MLP reads the [CLS] state:

    score = (MLP(h_CLS) - 0.16717362830052426) / 1.0333394966054072

(the standardisation ImageReward ships; the MLP has the aesthetic predictor's layers, 768 -> 1024 -> 128 ->
64 -> 16 -> 1, no activations). The prompt is tokenised by bert-base-uncased, padded to 35 tokens;
images go through OpenAI's CLIP preprocessing at 224 px (bicubic resize, centre crop, CLIP mean and std),
which PickScore and HPSv2 share, so a mix of them preprocesses each batch once.

The `image-reward` package needs torchvision, timm and fairscale, and torchvision does not import beside
this project's CPU torch; so the published checkpoint (`ImageReward.pt`, a plain state dict) is read as
tensors (`torch.load(weights_only=True)`) and mapped onto transformers' BLIP vision and text models, which
compute the same functions as BLIP's own `VisionTransformer` and `med.BertModel`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer_core.preference.clip_features import preprocessed
from trainer_core.rewards.aesthetic import aesthetic_mlp
from trainer_core.rewards.base import Reward, RewardModelConfig
from trainer_core.rewards.registry import RewardSpec

CHECKPOINT = "ImageReward.pt"
MED_CONFIG = "med_config.json"
#: ImageReward's standardisation of the MLP's output
MEAN, STD = 0.16717362830052426, 1.0333394966054072
MAX_TOKENS = 35
#: BLIP's ViTs (base 768/12, large 1024/16) have 64-wide heads; the state dict does not say how a width splits
HEAD_WIDTH = 64
#: BLIP's ViT (`models/vit.py`) names -> transformers `BlipVisionModel` names
VISION_NAMES = (
    (r"cls_token", "embeddings.class_embedding"),
    (r"pos_embed", "embeddings.position_embedding"),
    (r"patch_embed\.proj\.", "embeddings.patch_embedding."),
    (r"blocks\.(\d+)\.norm(\d)\.", r"encoder.layers.\1.layer_norm\2."),
    (r"blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
    (r"blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
    (r"blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp."),
    (r"norm\.", "post_layernorm."),
)


def _vision_name(name: str) -> str:
    for pattern, target in VISION_NAMES:
        renamed, found = re.subn(f"^{pattern}", target, name)
        if found:
            return renamed
    raise ValueError(f"{CHECKPOINT}: unexpected vision weight blip.visual_encoder.{name}")


def split_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """ImageReward's state dict as three state dicts: transformers' BLIP vision model, its BLIP text model,
    and the MLP. BLIP's contrastive projections (`vision_proj`, `text_proj`), which the score does not
    use, and saved position-id buffers are left out."""
    parts: dict[str, dict[str, torch.Tensor]] = {"vision": {}, "text": {}, "mlp": {}}
    for name, tensor in state.items():
        if name.startswith("blip.visual_encoder."):
            parts["vision"][_vision_name(name.removeprefix("blip.visual_encoder."))] = tensor
        elif name.startswith("blip.text_encoder.") and not name.endswith("position_ids"):
            parts["text"][name.removeprefix("blip.text_encoder.")] = tensor
        elif name.startswith("mlp.layers."):
            parts["mlp"][name.removeprefix("mlp.layers.")] = tensor
    for part, found in parts.items():
        if not found:
            raise ValueError(f"{CHECKPOINT}: no {part} weights; is this ImageReward's state dict?")
    return parts


def vision_config(vision: dict[str, torch.Tensor]) -> dict[str, Any]:
    """`BlipVisionConfig` arguments of the ViT whose (transformers-named) weights are `vision`."""
    width, _, patch, _ = vision["embeddings.patch_embedding.weight"].shape
    positions = vision["embeddings.position_embedding"].shape[1]
    return {
        "hidden_size": width,
        "intermediate_size": vision["encoder.layers.0.mlp.fc1.weight"].shape[0],
        "num_hidden_layers": len({name.split(".")[2] for name in vision if name.startswith("encoder.layers.")}),
        "num_attention_heads": max(1, width // HEAD_WIDTH),
        "patch_size": patch,
        "image_size": patch * round((positions - 1) ** 0.5),
        "layer_norm_eps": 1e-6,  # BLIP's ViT; transformers' default is 1e-5
        "hidden_act": "gelu",
    }


def text_config(med_config: dict[str, Any], encoder_width: int) -> dict[str, Any]:
    """`BlipTextConfig` arguments of BLIP's `med_config.json`, its cross-attention reading `encoder_width`
    image features (BLIP overwrites the file's `encoder_width` with the ViT's)."""
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings", "layer_norm_eps", "hidden_act", "pad_token_id")  # fmt: skip
    # is_decoder builds the cross-attention; the forward pass still runs bidirectionally (is_decoder=False)
    return {**{k: med_config[k] for k in keys if k in med_config}, "encoder_hidden_size": encoder_width,
            "is_decoder": True, "bos_token_id": None, "sep_token_id": None}  # fmt: skip


class ImageRewardModel(torch.nn.Module):
    """BLIP's ViT, its image-grounded text encoder and the MLP, as ImageReward scores with them."""

    def __init__(self, parts: dict[str, dict[str, torch.Tensor]], med_config: dict[str, Any]) -> None:
        from transformers import BlipTextConfig, BlipVisionConfig, BlipVisionModel
        from transformers.models.blip.modeling_blip_text import BlipTextModel

        super().__init__()
        vision = vision_config(parts["vision"])
        self.vision = BlipVisionModel(BlipVisionConfig(**vision))
        text = BlipTextConfig(**text_config(med_config, vision["hidden_size"]))
        self.text = BlipTextModel(text, add_pooling_layer=False)
        self.mlp = aesthetic_mlp(int(parts["mlp"]["0.weight"].shape[1]))
        for module, part in ((self.vision, "vision"), (self.text, "text"), (self.mlp, "mlp")):
            result = module.load_state_dict(parts[part], strict=False)
            missing = [k for k in result.missing_keys if not k.endswith("position_ids")]  # buffers, rebuilt
            if missing or result.unexpected_keys:
                problem = f"missing {missing[0]}" if missing else f"unexpected {result.unexpected_keys[0]}"
                raise ValueError(f"{CHECKPOINT}: its {part} weights do not fit {MED_CONFIG} ({problem})")
        self.image_size = int(vision["image_size"])

    def forward(self, pixels: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        image = self.vision(pixel_values=pixels).last_hidden_state
        text = self.text(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image,
            encoder_attention_mask=torch.ones(image.shape[:-1], dtype=torch.long, device=image.device),
            is_decoder=False,
        ).last_hidden_state
        return ((self.mlp(text[:, 0].float()) - MEAN) / STD).squeeze(-1)


class ImageReward(Reward):
    name = "imagereward"

    def __init__(self, path: Path, config: RewardModelConfig, shared: dict[str, Any]) -> None:
        from transformers import BertTokenizer, CLIPImageProcessor

        checkpoint = torch.load(path / CHECKPOINT, map_location="cpu", weights_only=True)
        model = ImageRewardModel(split_checkpoint(checkpoint), json.loads((path / MED_CONFIG).read_text()))
        self.device, dtype = config.torch_device(), config.torch_dtype()
        model.vision.to(dtype)
        model.text.to(dtype)  # the MLP stays fp32, as ImageReward casts the [CLS] state to float
        self.model = model.to(self.device).eval()
        self.tokenizer = BertTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
        side = model.image_size
        self.processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        self.pixel_cache = shared.setdefault("clip_pixels", {})
        self.batch_size = config.batch_size

    @torch.no_grad()
    def score(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        pixels = preprocessed(self.processor, images, self.pixel_cache)
        scores = []
        for start in range(0, len(images), self.batch_size):
            batch = slice(start, start + self.batch_size)
            tokens = self.tokenizer(
                prompts[batch], padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
            ).to(self.device)
            images_in = pixels[batch].to(self.device, self.model.vision.dtype)
            scores.append(self.model(images_in, tokens["input_ids"], tokens["attention_mask"]))
        return torch.cat(scores).cpu().numpy().astype(np.float64)


REWARDS = (
    RewardSpec(
        "imagereward",
        "any model: ImageReward, human preference (137k expert comparisons, BLIP ViT-L + BERT)",
        lambda config, path, shared: ImageReward(path, config, shared),  # type: ignore[arg-type]
        weights=f"{CHECKPOINT} and {MED_CONFIG} (THUDM/ImageReward) and tokenizer/ (the tokenizer of "
        "bert-base-uncased)",
        files=(CHECKPOINT, MED_CONFIG, "tokenizer/vocab.txt"),
    ),
)
