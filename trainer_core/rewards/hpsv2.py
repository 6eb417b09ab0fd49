"""HPSv2.1 (Wu et al., 2023): OpenCLIP ViT-H-14 fine-tuned on Human Preference Dataset v2.

score = cos(e(image), e(prompt)) of the fine-tuned model's normalised projections, as HPSv2's own `score`
computes it (the diagonal of image_features @ text_features.T, no logit scale).

The published checkpoint (`HPS_v2.1_compressed.pt`) is an OpenCLIP state dict; OpenCLIP needs torchvision,
which does not import beside this project's CPU torch, so the state dict is read as tensors only
(`torch.load(weights_only=True)`) and mapped onto transformers' `CLIPModel`, which computes the same
functions: OpenCLIP's fused attention input projection (`in_proj_weight`, q, k, v stacked) becomes the
three projections, its `[width, dim]` projections become transposed linear weights. The tokenizer is
OpenAI's CLIP BPE (OpenCLIP's `SimpleTokenizer` uses the same vocabulary), read from a local CLIP
tokenizer directory; images go through OpenAI's CLIP preprocessing at 224 px, as OpenCLIP's do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainer_core.rewards.base import Reward, RewardModelConfig
from trainer_core.rewards.clip_score import ClipSimilarity
from trainer_core.rewards.registry import RewardSpec

CHECKPOINT = "HPS_v2.1_compressed.pt"
#: ViT-H-14's attention heads in both towers (the state dict's shapes do not say how a width is split)
HEADS = 16


def _tower(state: dict[str, torch.Tensor], source: str, target: str) -> dict[str, torch.Tensor]:
    """One OpenCLIP transformer (`source`.resblocks.N) as transformers CLIP encoder layers (`target`)."""
    out: dict[str, torch.Tensor] = {}
    layers = sorted(
        {int(k.split(".")[len(source.split(".")) + 1]) for k in state if k.startswith(f"{source}.resblocks.")}
    )
    for i in layers:
        block, layer = f"{source}.resblocks.{i}", f"{target}.layers.{i}"
        for kind in ("weight", "bias"):
            q, k, v = state[f"{block}.attn.in_proj_{kind}"].chunk(3)
            out |= {f"{layer}.self_attn.q_proj.{kind}": q, f"{layer}.self_attn.k_proj.{kind}": k}
            out[f"{layer}.self_attn.v_proj.{kind}"] = v
            out[f"{layer}.self_attn.out_proj.{kind}"] = state[f"{block}.attn.out_proj.{kind}"]
            out[f"{layer}.layer_norm1.{kind}"] = state[f"{block}.ln_1.{kind}"]
            out[f"{layer}.layer_norm2.{kind}"] = state[f"{block}.ln_2.{kind}"]
            out[f"{layer}.mlp.fc1.{kind}"] = state[f"{block}.mlp.c_fc.{kind}"]
            out[f"{layer}.mlp.fc2.{kind}"] = state[f"{block}.mlp.c_proj.{kind}"]
    return out


def open_clip_to_transformers(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An OpenCLIP ViT state dict as a transformers `CLIPModel` state dict, and that model's `CLIPConfig`
    arguments (sizes read from the tensors' shapes)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    width_v, _, patch, _ = state["visual.conv1.weight"].shape
    positions_v = state["visual.positional_embedding"].shape[0]
    vocab, width_t = state["token_embedding.weight"].shape
    converted = {
        "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
        "text_model.final_layer_norm.weight": state["ln_final.weight"],
        "text_model.final_layer_norm.bias": state["ln_final.bias"],
        "text_projection.weight": state["text_projection"].T.contiguous(),
        "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
        "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
        "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": state["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": state["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": state["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": state["visual.ln_post.bias"],
        "visual_projection.weight": state["visual.proj"].T.contiguous(),
        "logit_scale": state["logit_scale"],
        **_tower(state, "transformer", "text_model.encoder"),
        **_tower(state, "visual.transformer", "vision_model.encoder"),
    }
    layers = {
        tower: len({k.split(".")[3] for k in converted if k.startswith(f"{tower}.encoder.layers.")})
        for tower in ("text_model", "vision_model")
    }
    config = {
        "text_config": {
            "vocab_size": vocab,
            "hidden_size": width_t,
            "intermediate_size": state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            "num_hidden_layers": layers["text_model"],
            "num_attention_heads": HEADS,
            "max_position_embeddings": state["positional_embedding"].shape[0],
            "hidden_act": "gelu",
            "eos_token_id": 2,  # transformers' spelling of OpenCLIP's pooling: at the highest token id (end of text)
        },
        "vision_config": {
            "hidden_size": width_v,
            "intermediate_size": state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
            "num_hidden_layers": layers["vision_model"],
            "num_attention_heads": HEADS,
            "patch_size": patch,
            "image_size": patch * round((positions_v - 1) ** 0.5),
            "hidden_act": "gelu",
        },
        "projection_dim": state["visual.proj"].shape[1],
    }
    return converted, config


def _build(config: RewardModelConfig, path: Path | None, shared: dict[str, Any]) -> Reward:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from trainer_core.preference.clip_features import ClipFeatures

    assert path is not None
    checkpoint = torch.load(path / CHECKPOINT, map_location="cpu", weights_only=True)
    state, arguments = open_clip_to_transformers(checkpoint.get("state_dict", checkpoint))
    model = CLIPModel(CLIPConfig(**arguments))
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]  # buffers, rebuilt
    if missing or result.unexpected_keys:
        problem = missing[0] if missing else f"unexpected {result.unexpected_keys[0]}"
        raise ValueError(f"{path / CHECKPOINT}: not an OpenCLIP ViT state dict ({problem})")
    side = arguments["vision_config"]["image_size"]
    processor = CLIPImageProcessor(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    clip = ClipFeatures.from_parts(
        f"hpsv2:{path}",
        model.to(config.torch_dtype()),
        processor,
        tokenizer,
        str(config.torch_device()),
        config.batch_size,
        pixel_cache=shared.setdefault("clip_pixels", {}),
    )
    return ClipSimilarity("hpsv2", clip)


REWARDS = (
    RewardSpec(
        "hpsv2",
        "any model: HPSv2.1, human preference (Human Preference Dataset v2, OpenCLIP ViT-H-14)",
        _build,
        weights=f"{CHECKPOINT} (xswu/HPSv2) and tokenizer/ (the CLIP tokenizer of openai/clip-vit-large-patch14)",
        files=(CHECKPOINT, "tokenizer/vocab.json"),
    ),
)
