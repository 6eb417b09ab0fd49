"""The committed `shapes-base` model: offline loading, size, and what it draws."""

import json

import pytest
import torch

from trainer_core.adapters import load_adapter
from trainer_core.model_zoo import BUILTIN_MODELS, ModelNotFoundError, resolve_model
from trainer_core.shapes.evaluation import SamplingConfig, evaluate, format_table, generate_images
from trainer_core.shapes.grammar import COLORS, SHAPES, ObjectGroup, SceneSpec, parse_prompt
from trainer_core.shapes.scoring import score_image

MAX_BYTES = 25 * 1024 * 1024


@pytest.fixture(scope="module")
def adapter():
    return load_adapter("shapes-base", "cpu")


def test_committed_weights_are_safetensors_within_budget():
    root = BUILTIN_MODELS["shapes-base"]
    index = json.loads((root / "model_index.json").read_text())
    assert index["_class_name"] == "ShapesPipeline"
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    files = [p for p in root.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= MAX_BYTES
    weights = [p for p in files if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".safetensors")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)


def test_loads_offline_in_eval_mode(adapter):
    assert adapter.latent_shape == (3, 32, 32)
    assert not any(p.requires_grad for p in adapter.denoiser.parameters())
    assert not adapter.denoiser.training


def test_unknown_models_get_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"model: 'sd-99' is not a built-in model"):
        resolve_model("sd-99")
    with pytest.raises(ModelNotFoundError, match=r"model_index\.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="model: empty"):
        resolve_model(" ")


@pytest.mark.slow
def test_single_object_colour_and_shape_on_a_fixed_subset(adapter):
    specs = [SceneSpec((ObjectGroup(1, shape, color),)) for color in COLORS for shape in SHAPES]
    result = evaluate(adapter, specs, n_seeds=4, sampling=SamplingConfig(steps=12, solver="heun"))
    assert result.n_images == 72
    assert result.accuracy["single"] >= 0.8


def test_overall_accuracy_per_seed_is_each_seed_scored_alone(adapter):
    prompts = ["a red circle", "a blue square", "two green triangles", "three yellow circles", "four red squares"]
    specs = [parse_prompt(p) for p in prompts]
    sampling = SamplingConfig(steps=6, solver="euler")
    result = evaluate(adapter, specs, n_seeds=3, sampling=sampling)
    assert len(result.overall_per_seed) == 3
    assert sum(result.overall_per_seed) / 3 == pytest.approx(result.accuracy["overall"])
    # seed 2 alone, scored here: the mean of the single and the count category
    correct = [
        score_image(image, spec)["geneval"]
        for image, spec in zip(generate_images(adapter, prompts, [2] * 5, sampling), specs, strict=True)
    ]
    assert result.overall_per_seed[2] == pytest.approx((sum(correct[:2]) / 2 + sum(correct[2:]) / 3) / 2)
    assert result.overall_per_seed[0] == pytest.approx(evaluate(adapter, specs, 1, sampling).accuracy["overall"])
    spread = torch.tensor(result.overall_per_seed).std().item()
    assert result.overall_standard_error == pytest.approx(spread / 3**0.5, abs=1e-6)
    assert result.to_json()["overall_per_seed"] == result.overall_per_seed
    assert "overall per seed: " + ", ".join(f"{v:.3f}" for v in result.overall_per_seed) in format_table(result)


def test_generation_is_deterministic_and_independent_of_batching(adapter):
    sampling = SamplingConfig(steps=6, solver="euler", batch_size=3)
    prompts = ["a red circle", "two blue squares", "a green triangle left of a yellow circle"]
    together = generate_images(adapter, prompts, [0, 1, 2], sampling)
    alone = generate_images(adapter, prompts[1:2], [1], sampling)
    assert together.shape == (3, 32, 32, 3)
    assert abs(together[1].astype(int) - alone[0].astype(int)).max() <= 1


@pytest.mark.slow
def test_heun_at_8_steps_is_close_to_euler_at_64(adapter):
    prompts = ["a red circle", "three blue squares", "a purple triangle above an orange square"] * 2
    embeddings = adapter.encode_prompts(prompts)
    noise = adapter.noise(list(range(6)))
    reference = adapter.sample(embeddings, noise, 64, "euler")
    coarse = {name: adapter.sample(embeddings, noise, 8, name) for name in ("euler", "heun", "dpmpp_2m")}
    error = {name: float((image - reference).abs().mean()) for name, image in coarse.items()}
    assert error["heun"] < 0.05
    assert error["dpmpp_2m"] < 0.05
    assert error["heun"] < error["euler"]
    fine = adapter.sample(embeddings, noise, 32, "heun")
    assert float((fine - reference).abs().mean()) < error["heun"]
    assert torch.isfinite(reference).all()


def test_classifier_free_guidance_changes_samples_and_accepts_a_given_null_prompt(adapter):
    embeddings = adapter.encode_prompts(["two red circles", "a blue square"])
    noise = adapter.noise([0, 1])
    plain = adapter.sample(embeddings, noise, 4, "euler")
    guided = adapter.sample(embeddings, noise, 4, "euler", guidance_scale=3.0)
    given = adapter.sample(
        embeddings, noise, 4, "euler", guidance_scale=3.0, null_embeddings=adapter.encode_prompts([""])
    )
    assert torch.isfinite(guided).all()
    assert (guided - plain).abs().mean() > 1e-3
    assert torch.allclose(guided, given)
