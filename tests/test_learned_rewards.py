"""The rewards people align with, each against its reference formula on tiny random models saved in the
layout of the real weights, OCR with the real Tesseract on rendered text; the registry loads nothing to
list them, refuses missing weights by path, and scores monitored rewards beside the trained ones."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont
from tiny_pipelines import tiny_clip_model
from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

from storage.data_dir import DataDir
from studio.api import Studio
from trainer_core.config import ConfigError
from trainer_core.rewards.aesthetic import MLP_FILE, aesthetic_mlp
from trainer_core.rewards.base import RewardMix, RewardMixConfig, RewardModelConfig
from trainer_core.rewards.ocr import asked_text, edit_distance
from trainer_core.rewards.registry import build_rewards, reward_specs

PROMPTS = ["a red circle", "two blue squares", "a green triangle left of a red square"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models directory as the studio reads it: rewards/NAME for each learned reward."""
    root = tmp_path_factory.mktemp("models")
    clip = tiny_clip_model(root / "rewards" / "clip_score")
    shutil.copytree(clip, root / "rewards" / "pickscore")
    shutil.copytree(clip, root / "rewards" / "aesthetic" / "clip")
    torch.manual_seed(1)
    mlp = aesthetic_mlp(8)
    torch.save({f"layers.{k}": v for k, v in mlp.state_dict().items()}, root / "rewards" / "aesthetic" / MLP_FILE)
    return root


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)


def reference_embeddings(directory, pictures, prompts):
    """CLIP's normalised image and text embeddings, computed here with transformers directly."""
    model = CLIPModel.from_pretrained(directory).eval()
    pixels = AutoImageProcessor.from_pretrained(directory)(images=list(pictures), return_tensors="pt")["pixel_values"]
    tokens = AutoTokenizer.from_pretrained(directory)(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        image = model.get_image_features(pixel_values=pixels)
        text = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    image = image if isinstance(image, torch.Tensor) else image.pooler_output
    text = text if isinstance(text, torch.Tensor) else text.pooler_output
    return model, torch.nn.functional.normalize(image, dim=-1), torch.nn.functional.normalize(text, dim=-1)


def test_clip_score_and_pickscore_are_their_reference_formulas(models):
    pictures = images(3, 0)
    rewards = build_rewards(["clip_score", "pickscore"], models_dir=models)
    model, image, text = reference_embeddings(models / "rewards" / "pickscore", pictures, PROMPTS)
    cosine = (image * text).sum(-1).numpy()
    np.testing.assert_allclose(rewards["clip_score"].score(pictures, PROMPTS), cosine, atol=1e-5)
    pick = model.logit_scale.exp().item() * cosine  # PickScore's logits
    np.testing.assert_allclose(rewards["pickscore"].score(pictures, PROMPTS), pick, atol=1e-4)
    assert model.logit_scale.exp().item() > 2  # the scale is really applied


def test_aesthetic_is_the_mlp_on_the_normalised_clip_embedding(models):
    pictures = images(4, 1)
    reward = build_rewards(["aesthetic"], models_dir=models)["aesthetic"]
    _, image, _ = reference_embeddings(models / "rewards" / "aesthetic" / "clip", pictures, PROMPTS[:1] * 4)
    state = torch.load(models / "rewards" / "aesthetic" / MLP_FILE, weights_only=True)
    hidden = image
    for index in (0, 2, 4, 6, 7):  # the predictor's linear layers; dropout is off in inference
        hidden = hidden @ state[f"layers.{index}.weight"].T + state[f"layers.{index}.bias"]
    np.testing.assert_allclose(reward.score(pictures, PROMPTS[:1] * 4), hidden.squeeze(-1).numpy(), atol=1e-5)


def test_clip_rewards_of_one_mix_load_each_model_once_and_preprocess_each_batch_once(models, monkeypatch):
    rewards = build_rewards(["clip_score", "aesthetic"], models_dir=models)
    processor = rewards["clip_score"].clip.processor  # type: ignore[attr-defined]
    calls = []
    original = type(processor).__call__
    monkeypatch.setattr(type(processor), "__call__", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    pictures = images(2, 3)
    for reward in rewards.values():
        reward.score(pictures, PROMPTS[:2])
    assert len(calls) == 1  # same preprocessing (a CLIP image processor): the pixels are computed once
    rewards["clip_score"].score(images(2, 4), PROMPTS[:2])
    assert len(calls) == 2


def render_text(text: str, size: int = 256) -> np.ndarray:
    picture = Image.new("RGB", (size, size // 2), "white")
    draw = ImageDraw.Draw(picture)
    draw.text((12, size // 8), text, fill="black", font=ImageFont.load_default(size=40))
    return np.asarray(picture)


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="tesseract-ocr is not installed (CI installs it)")
def test_ocr_reads_rendered_text_with_the_real_engine():
    reward = build_rewards(["ocr"])["ocr"]
    pictures = np.stack([render_text("OPEN LATE"), render_text("CLOSED"), np.full((128, 256, 3), 255, np.uint8)])
    prompts = ['a shop sign that says "Open late"'] * 3
    scores = reward.score(pictures, prompts)
    assert scores[0] >= 0.85  # case and spaces do not count
    assert scores[1] < 0.5 and scores[2] == 0.0  # another word; nothing to read
    with pytest.raises(ValueError, match="asks for no text in double quotes"):
        reward.score(pictures[:1], ["a shop sign"])


def test_edit_distance_and_the_asked_text():
    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "abc") == 3 and edit_distance("ab", "ab") == 0
    assert asked_text('a sign saying "Hello World" and "more"') == "Hello World"


def test_listing_loads_nothing_and_missing_weights_are_refused_by_path(tmp_path, monkeypatch):
    import trainer_core.preference.clip_features as clip_features

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(clip_features.ClipFeatures, "__init__", no_loading)
    studio = Studio(DataDir(tmp_path / "home"))
    table = {row.name: row for row in studio.reward_table()}
    assert set(reward_specs()) <= set(table) and "pickscore" in studio.rewards()
    assert "does not exist" in table["pickscore"].problem and table["pickscore"].path == str(
        studio.data_dir.models / "rewards" / "pickscore"
    )
    assert table["geneval"].problem == "" and table["geneval"].weights == ""
    config = studio.preset_config()
    config["rewards"] = {"weights": {"partial": 1.0, "pickscore": 0.5}}
    with pytest.raises(
        ConfigError, match=r"rewards\.weights\.pickscore: .*rewards/pickscore does not exist; put PickScore"
    ):
        studio.validate(config)
    (studio.data_dir.models / "my-aesthetic").mkdir()
    config["rewards"] = {
        "weights": {"partial": 1.0},
        "monitor": ["aesthetic"],
        "models": {"aesthetic": {"path": "my-aesthetic"}},  # relative to the data directory's models/
    }
    expected = studio.data_dir.models / "my-aesthetic"
    with pytest.raises(ConfigError, match=rf"rewards\.monitor\.aesthetic: {expected} lacks clip/config.json"):
        studio.submit(config)
    config["rewards"]["models"]["aesthetic"]["path"] = str(tmp_path)  # the web app names no server path
    with pytest.raises(ConfigError, match=r"rewards\.models\.aesthetic\.path: absolute paths are not accepted"):
        studio.submit(config)
    assert studio.jobs.list_jobs() == []  # nothing stored for a refused job


def test_monitored_rewards_are_scored_but_carry_no_weight():
    rewards = build_rewards(["partial", "geneval", "jpeg_incompressibility"])
    pictures = images(4, 5)
    prompts = ["a red circle", "a red circle", "two blue squares", "two blue squares"]
    trained = RewardMix(rewards, RewardMixConfig({"partial": 1.0}))
    watched = RewardMix(rewards, RewardMixConfig({"partial": 1.0}, monitor=("jpeg_incompressibility", "geneval")))
    scores = watched.score(pictures, prompts)
    assert list(scores) == ["partial", "jpeg_incompressibility", "geneval"]
    plain = trained.score(pictures, prompts)
    assert torch.equal(watched.advantages(scores, 2), trained.advantages(plain, 2))
    np.testing.assert_array_equal(watched.combined(scores), trained.combined(plain))


def test_a_reward_models_section_is_checked_by_field():
    with pytest.raises(ValueError, match=r"rewards\.models\.pickscore\.dtype: must be one of auto, float32, bfloat16"):
        RewardMixConfig({"partial": 1.0}, models={"pickscore": {"dtype": "half"}})
    config = RewardMixConfig({"partial": 1.0}, models={"pickscore": {"batch_size": 4, "device": "cpu"}})
    assert config.model_config("pickscore") == RewardModelConfig(batch_size=4, device="cpu")


def test_a_training_iteration_logs_every_reward_and_its_scoring_time(tiny_config):
    from trainer_core.adapters import load_adapter
    from trainer_core.trainer import VGRPOTrainer

    config = tiny_config(rewards=RewardMixConfig({"jpeg_incompressibility": 1.0}, monitor=("partial",)))
    rewards = RewardMix(build_rewards(config.rewards.scored), config.rewards)
    metrics = VGRPOTrainer(load_adapter(config.model.name, "cpu"), rewards, config).step()
    assert {"reward_jpeg_incompressibility", "reward_partial"} <= set(metrics)
    assert metrics["reward_mean"] == pytest.approx(metrics["reward_jpeg_incompressibility"])  # partial: no weight
    assert metrics["score_s_partial"] > 0 and metrics["score_s_jpeg_incompressibility"] > 0
    assert metrics["score_s_partial"] + metrics["score_s_jpeg_incompressibility"] <= metrics["reward_s"]


def test_the_reward_benchmark_times_each_reward_as_a_job_builds_it(models):
    from studio.bench.rewards import reward_benchmark

    names = ["partial", "clip_score", *(["ocr"] if shutil.which("tesseract") else [])]
    report = reward_benchmark(names, models, images=2, resolution=32, batches=1)
    assert [row["reward"] for row in report["results"]] == names
    assert all(row["ms_per_image"] > 0 for row in report["results"])
    with pytest.raises(ValueError, match="--names: unknown 'hps'"):
        reward_benchmark(["hps"], models)


WIDTH, LAYERS, PATCH, SIDE, CONTEXT, VOCAB, PROJECTION = 32, 2, 8, 32, 8, 60, 16


def open_clip_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A tiny random state dict with OpenCLIP's ViT names and shapes (16 heads, as ViT-H-14 has)."""
    from trainer_core.real_sizes import random_open_clip_state

    tower = {"hidden_size": WIDTH, "intermediate_size": 4 * WIDTH, "num_hidden_layers": LAYERS}
    return random_open_clip_state(
        {
            "text_config": {**tower, "vocab_size": VOCAB, "max_position_embeddings": CONTEXT},
            "vision_config": {**tower, "patch_size": PATCH, "image_size": SIDE},
            "projection_dim": PROJECTION,
        },
        seed,
    )


def open_clip_forward(state, tower: str, x: torch.Tensor, causal: bool) -> torch.Tensor:
    """OpenCLIP's residual attention blocks, written here from its architecture with PyTorch's own
    multi-head attention on the fused in_proj weights (not transformers' CLIP)."""
    import torch.nn.functional as F

    mask = torch.full((x.shape[1], x.shape[1]), float("-inf")).triu(1) if causal else None
    for i in range(LAYERS):
        p = {
            k.removeprefix(f"{tower}.resblocks.{i}."): v
            for k, v in state.items()
            if k.startswith(f"{tower}.resblocks.{i}.")
        }
        h = F.layer_norm(x, (WIDTH,), p["ln_1.weight"], p["ln_1.bias"]).transpose(0, 1)
        attended, _ = F.multi_head_attention_forward(
            h, h, h, WIDTH, 16, p["attn.in_proj_weight"], p["attn.in_proj_bias"], None, None, False, 0.0,
            p["attn.out_proj.weight"], p["attn.out_proj.bias"], training=False, need_weights=False, attn_mask=mask,
        )  # fmt: skip
        x = x + attended.transpose(0, 1)
        h = F.layer_norm(x, (WIDTH,), p["ln_2.weight"], p["ln_2.bias"])
        x = x + F.linear(
            F.gelu(F.linear(h, p["mlp.c_fc.weight"], p["mlp.c_fc.bias"])), p["mlp.c_proj.weight"], p["mlp.c_proj.bias"]
        )
    return x


def test_hpsv2_is_the_cosine_of_the_open_clip_model_it_was_converted_from(tmp_path):
    import torch.nn.functional as F
    from transformers import CLIPImageProcessor

    from trainer_core.real_sizes import synthetic_clip_tokenizer
    from trainer_core.rewards.hpsv2 import CHECKPOINT

    folder = tmp_path / "rewards" / "hpsv2"
    folder.mkdir(parents=True)
    state = open_clip_state()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, folder / CHECKPOINT)  # as published
    tokenizer = synthetic_clip_tokenizer(folder / "tokenizer", CONTEXT)
    reward = build_rewards(["hpsv2"], models_dir=tmp_path)["hpsv2"]

    pictures, prompts = images(3, 7), ["a red circle", "two blue squares", "abc"]
    side = {"shortest_edge": SIDE}
    pixels = CLIPImageProcessor(size=side, crop_size={"height": SIDE, "width": SIDE})(
        images=list(pictures), return_tensors="pt"
    )["pixel_values"]
    patches = F.conv2d(pixels, state["visual.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    x = (
        torch.cat([state["visual.class_embedding"].expand(3, 1, WIDTH), patches], 1)
        + state["visual.positional_embedding"]
    )
    x = open_clip_forward(
        state,
        "visual.transformer",
        F.layer_norm(x, (WIDTH,), state["visual.ln_pre.weight"], state["visual.ln_pre.bias"]),
        causal=False,
    )
    image = (
        F.layer_norm(x[:, 0], (WIDTH,), state["visual.ln_post.weight"], state["visual.ln_post.bias"])
        @ state["visual.proj"]
    )
    tokens = tokenizer(prompts, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="pt")[
        "input_ids"
    ]
    t = open_clip_forward(
        state, "transformer", state["token_embedding.weight"][tokens] + state["positional_embedding"], causal=True
    )
    t = F.layer_norm(t, (WIDTH,), state["ln_final.weight"], state["ln_final.bias"])
    text = t[torch.arange(3), tokens.argmax(-1)] @ state["text_projection"]  # OpenCLIP pools at the highest token id
    expected = (F.normalize(image, dim=-1) * F.normalize(text, dim=-1)).sum(-1)
    np.testing.assert_allclose(reward.score(pictures, prompts), expected.numpy(), atol=1e-5)


TINY_VIT = {"width": 128, "layers": 2, "patch": 8, "image_size": 32, "intermediate": 256}  # two 64-wide heads
TINY_MED = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
            "max_position_embeddings": 40, "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0,
            "vocab_size": 57, "encoder_width": 768, "add_cross_attention": True}  # fmt: skip


def blip_reference_score(state, pixels, input_ids, attention_mask):
    """ImageReward's score written here from BLIP's architecture (its ViT, `med.BertModel` with additive
    -10000 masks, the MLP and the standardisation) on the checkpoint's own names, not transformers' BLIP."""
    import torch.nn.functional as F

    def p(prefix):
        return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}

    def attend(q, k, v, heads, bias=None):
        split = lambda x: x.unflatten(-1, (heads, -1)).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        scores = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + (0 if bias is None else bias)
        return (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)

    v, w = p("blip.visual_encoder."), TINY_VIT["width"]
    x = F.conv2d(pixels, v["patch_embed.proj.weight"], v["patch_embed.proj.bias"], stride=TINY_VIT["patch"])
    x = torch.cat([v["cls_token"].expand(len(x), 1, w), x.flatten(2).transpose(1, 2)], 1) + v["pos_embed"]
    for i in range(TINY_VIT["layers"]):
        b = {k.removeprefix(f"blocks.{i}."): t for k, t in v.items() if k.startswith(f"blocks.{i}.")}
        h = F.layer_norm(x, (w,), b["norm1.weight"], b["norm1.bias"], eps=1e-6)
        q, k, val = F.linear(h, b["attn.qkv.weight"], b["attn.qkv.bias"]).chunk(3, -1)
        x = x + F.linear(attend(q, k, val, w // 64), b["attn.proj.weight"], b["attn.proj.bias"])
        h = F.layer_norm(x, (w,), b["norm2.weight"], b["norm2.bias"], eps=1e-6)
        inner = F.gelu(F.linear(h, b["mlp.fc1.weight"], b["mlp.fc1.bias"]))
        x = x + F.linear(inner, b["mlp.fc2.weight"], b["mlp.fc2.bias"])
    image = F.layer_norm(x, (w,), v["norm.weight"], v["norm.bias"], eps=1e-6)

    t, d, heads = p("blip.text_encoder."), TINY_MED["hidden_size"], TINY_MED["num_attention_heads"]
    ln = lambda x, name: F.layer_norm(x, (d,), t[f"{name}.weight"], t[f"{name}.bias"], eps=1e-12)  # noqa: E731
    lin = lambda x, name: F.linear(x, t[f"{name}.weight"], t[f"{name}.bias"])  # noqa: E731
    positions = t["embeddings.position_embeddings.weight"][: input_ids.shape[1]]
    h = ln(t["embeddings.word_embeddings.weight"][input_ids] + positions, "embeddings.LayerNorm")
    padding = (1.0 - attention_mask[:, None, None, :].float()) * -10000.0
    for i in range(TINY_MED["num_hidden_layers"]):
        layer = f"encoder.layer.{i}"
        for block, source, bias in (("attention", None, padding), ("crossattention", image, None)):
            kv = h if source is None else source
            s = f"{layer}.{block}.self"
            context = attend(lin(h, f"{s}.query"), lin(kv, f"{s}.key"), lin(kv, f"{s}.value"), heads, bias)
            h = ln(lin(context, f"{layer}.{block}.output.dense") + h, f"{layer}.{block}.output.LayerNorm")
        inner = F.gelu(lin(h, f"{layer}.intermediate.dense"))
        h = ln(lin(inner, f"{layer}.output.dense") + h, f"{layer}.output.LayerNorm")
    out = h[:, 0]
    for i in (0, 2, 4, 6, 7):
        out = F.linear(out, state[f"mlp.layers.{i}.weight"], state[f"mlp.layers.{i}.bias"])
    return (out.squeeze(-1) - 0.16717362830052426) / 1.0333394966054072


def test_imagereward_is_blips_score_from_the_published_checkpoint(tmp_path):
    from trainer_core.real_sizes import save_random_image_reward
    from trainer_core.rewards.imagereward import CHECKPOINT

    folder = save_random_image_reward(tmp_path / "rewards" / "imagereward", TINY_VIT, TINY_MED, seed=3)
    reward = build_rewards(["imagereward"], models_dir=tmp_path)["imagereward"]
    pictures = np.random.default_rng(5).integers(0, 255, (3, 40, 48, 3), dtype=np.uint8)
    prompts = ["a red circle", "two blue squares left of a cat", "abc"]

    # ImageReward's preprocessing, with PIL: bicubic resize of the short side to 32, centre crop, CLIP mean/std
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    resized = [np.asarray(Image.fromarray(p).resize((38, 32), Image.BICUBIC))[:, 3:35] for p in pictures]
    pixels = ((torch.tensor(np.stack(resized)).float() / 255 - mean) / std).permute(0, 3, 1, 2)
    tokens = AutoTokenizer.from_pretrained(folder / "tokenizer")(
        prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt"
    )
    state = torch.load(folder / CHECKPOINT, weights_only=True)
    expected = blip_reference_score(state, pixels, tokens["input_ids"], tokens["attention_mask"])
    scores = reward.score(pictures, prompts)
    np.testing.assert_allclose(scores, expected.numpy(), atol=1e-4)
    assert np.ptp(scores) > 1e-3  # the images and prompts are told apart
    # the prompt matters: the same images with each other's prompts score differently
    assert not np.allclose(reward.score(pictures, prompts[::-1]), scores)


def test_imagereward_refuses_a_checkpoint_that_is_not_its_own(tmp_path):
    from trainer_core.real_sizes import save_random_image_reward
    from trainer_core.rewards.imagereward import CHECKPOINT

    folder = save_random_image_reward(tmp_path / "rewards" / "imagereward", TINY_VIT, TINY_MED)
    torch.save({"visual.conv1.weight": torch.zeros(1)}, folder / CHECKPOINT)  # an OpenCLIP file in its place
    with pytest.raises(ValueError, match=r"ImageReward\.pt: no vision weights"):
        build_rewards(["imagereward"], models_dir=tmp_path)


def test_hpsv2_and_imagereward_in_one_mix_preprocess_each_batch_once(tmp_path, monkeypatch):
    from transformers import CLIPImageProcessor

    from trainer_core.real_sizes import save_random_image_reward, synthetic_clip_tokenizer
    from trainer_core.rewards.hpsv2 import CHECKPOINT

    save_random_image_reward(tmp_path / "rewards" / "imagereward", TINY_VIT, TINY_MED)
    (tmp_path / "rewards" / "hpsv2").mkdir()
    torch.save(open_clip_state(), tmp_path / "rewards" / "hpsv2" / CHECKPOINT)
    synthetic_clip_tokenizer(tmp_path / "rewards" / "hpsv2" / "tokenizer", CONTEXT).save_pretrained(
        tmp_path / "rewards" / "hpsv2" / "tokenizer"
    )
    rewards = build_rewards(["hpsv2", "imagereward"], models_dir=tmp_path)
    calls = []
    original = CLIPImageProcessor.__call__
    counted = lambda self, *a, **k: calls.append(1) or original(self, *a, **k)  # noqa: E731
    monkeypatch.setattr(CLIPImageProcessor, "__call__", counted)
    pictures = images(2, 3)
    separately = {name: reward.score(pictures, PROMPTS[:2]) for name, reward in rewards.items()}
    assert len(calls) == 1  # both at 32 px with CLIP's normalisation: one preprocessing
    alone = build_rewards(["imagereward"], models_dir=tmp_path)["imagereward"].score(pictures, PROMPTS[:2])
    np.testing.assert_allclose(separately["imagereward"], alone, atol=1e-6)  # sharing changes no score
