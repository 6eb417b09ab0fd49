"""The SD3 adapter on a tiny, randomly initialised StableDiffusion3Pipeline, saved and loaded offline."""

import json

import pytest
import torch

from trainer_core.adapters import load_adapter
from trainer_core.adapters.sd3 import SD3Adapter
from trainer_core.config import LoggingConfig, ModelConfig, RolloutConfig, TrainConfig
from trainer_core.lora import LoraSpec
from trainer_core.rewards.base import RewardMix, RewardMixConfig
from trainer_core.rewards.builtin import builtin_rewards
from trainer_core.trainer import VGRPOTrainer
from trainer_core.vgrpo import VGRPOConfig


def _tiny_clip_tokenizer(folder):
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in "abcdefghijklmnopqrstuvwxyz":
        vocab[char] = len(vocab)
        vocab[char + "</w>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)


@pytest.fixture(scope="module")
def tiny_sd3(tmp_path_factory):
    """Dummy components in the style of diffusers' own SD3 tests; no T5."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    root = tmp_path_factory.mktemp("sd3")
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=1,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,
        pooled_projection_dim=64,
        out_channels=4,
    )
    clip = CLIPTextConfig(
        bos_token_id=0,
        eos_token_id=1,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        pad_token_id=1,
        vocab_size=60,
        projection_dim=32,
        max_position_embeddings=16,
    )
    vae = AutoencoderKL(
        sample_size=16,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 8),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        text_encoder=CLIPTextModelWithProjection(clip),
        tokenizer=_tiny_clip_tokenizer(root / "tok1"),
        text_encoder_2=CLIPTextModelWithProjection(clip),
        tokenizer_2=_tiny_clip_tokenizer(root / "tok2"),
        text_encoder_3=None,
        tokenizer_3=None,
    )
    path = root / "tiny-sd3"
    pipe.save_pretrained(path)
    return str(path)


def test_adapter_loads_offline_and_samples(tiny_sd3):
    adapter = load_adapter(tiny_sd3, "cpu")
    assert isinstance(adapter, SD3Adapter)
    assert adapter.latent_shape == (4, 8, 8) and adapter.time_shift == 3.0
    embeddings = adapter.encode_prompts(["a red circle", "a cat"])
    latents = adapter.sample(embeddings, adapter.noise([0, 1]), steps=3, solver="dpmpp_2m")
    images = adapter.decode(latents)
    assert images.shape == (2, 16, 16, 3) and images.dtype.name == "uint8"


def test_one_vgrpo_iteration_trains_only_the_lora(tiny_sd3, tmp_path):
    config = TrainConfig(
        iterations=1,
        model=ModelConfig(name=tiny_sd3, device="cpu"),
        rollout=RolloutConfig(
            prompts_per_iteration=2, group_size=3, steps=2, solver="euler", prompts=str(_prompts(tmp_path))
        ),
        vgrpo=VGRPOConfig(n_mc=2, gradient_steps=1, clip_epsilon=0.0),
        lora=LoraSpec(rank=2, alpha=2),
        rewards=RewardMixConfig({"jpeg_incompressibility": 1.0}),
        logging=LoggingConfig(sample_every=0),
    )
    adapter = load_adapter(tiny_sd3, "cpu")
    trainer = VGRPOTrainer(adapter, RewardMix(builtin_rewards(), config.rewards), config)
    base = {k: v.clone() for k, v in adapter.denoiser.named_parameters() if "lora_" not in k}
    lora = {k: v.clone() for k, v in adapter.denoiser.named_parameters() if "lora_" in k}
    assert lora, "no LoRA parameters were added"
    metrics = trainer.step()
    assert metrics["iteration"] == 1 and metrics["grad_norm"] > 0
    after = dict(adapter.denoiser.named_parameters())
    assert all(torch.equal(after[k], v) for k, v in base.items())
    assert any(not torch.equal(after[k], v) for k, v in lora.items())

    saved = tmp_path / "sd3_lora.safetensors"
    adapter.save_lora(saved)
    fresh = load_adapter(tiny_sd3, "cpu")
    fresh.load_lora(saved)
    z = adapter.noise([5])
    emb = adapter.encode_prompts(["a red circle"])
    t = torch.tensor([0.5])
    with torch.no_grad():
        assert torch.allclose(adapter.velocity(z, t, emb), fresh.velocity(z, t, emb), atol=1e-5)


def _prompts(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red circle\na cat on a mat\n")
    return path
