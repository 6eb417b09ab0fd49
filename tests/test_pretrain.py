import random

import numpy as np
import pytest
import torch

from trainer_core.shapes.grammar import COLORS, RELATIONS, SceneSpec, parse_prompt
from trainer_core.shapes.pipeline import ShapesModelConfig, ShapesPipeline
from trainer_core.shapes.pretrain import (
    PARSE_CLASSES,
    PretrainConfig,
    RenderedScenes,
    parse_labels,
    pretrain_shapes,
)
from trainer_core.shapes.scoring import score_images


def _weights(pipe: ShapesPipeline) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in pipe.unet.state_dict().items()}


def test_pretraining_is_reproducible_and_saves_a_loadable_pipeline(tiny_shapes, tmp_path):
    config = PretrainConfig(steps=6, batch_size=8, warmup_steps=2, snapshot_every=3, model=tiny_shapes)
    first = pretrain_shapes(config, tmp_path / "a", progress=False)
    second = pretrain_shapes(config, tmp_path / "b", progress=False)
    a, b = _weights(first), _weights(second)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "step_3" / "model_index.json").is_file()
    loaded = ShapesPipeline.from_pretrained(tmp_path / "a", local_files_only=True)
    assert all(torch.equal(loaded.unet.state_dict()[k], a[k]) for k in a)
    assert "steps=6" in (tmp_path / "a" / "PRETRAIN.txt").read_text()


def _text_weights(pipe: ShapesPipeline) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}


def test_the_text_encoder_trains_unless_frozen(tiny_shapes, tmp_path):
    from trainer_core.shapes.pipeline import build_shapes_pipeline

    initial = _text_weights(build_shapes_pipeline(tiny_shapes, seed=0))
    config = PretrainConfig(steps=4, batch_size=8, warmup_steps=1, model=tiny_shapes, train_text_encoder=False)
    pretrain_shapes(config, tmp_path / "frozen", progress=False)
    frozen = ShapesPipeline.from_pretrained(tmp_path / "frozen", local_files_only=True)
    assert all(torch.equal(v, initial[k]) for k, v in _text_weights(frozen).items())
    assert "train_text_encoder=False" in (tmp_path / "frozen" / "PRETRAIN.txt").read_text()
    joint = pretrain_shapes(
        PretrainConfig(steps=4, batch_size=8, warmup_steps=1, model=tiny_shapes), tmp_path / "joint", progress=False
    )
    moved = [k for k, v in _text_weights(joint).items() if not torch.equal(v, initial[k])]
    assert any("embeddings" in k for k in moved) and any("layers.0" in k for k in moved)


def test_parse_labels_read_the_spec_back():
    labels = parse_labels(["two red circles left of a blue square", "a circle", "", "four green triangles"])
    # relation, then per group slot: count, shape, colour (0: absent); circle, square, triangle = 1, 2, 3
    assert labels[0].tolist() == [1 + RELATIONS.index("left of"), 2, 1, 1 + COLORS.index("red"), 1, 2, 5]
    assert labels[1].tolist() == [0, 1, 1, 0, 0, 0, 0]
    assert labels[2].tolist() == [-100] * len(PARSE_CLASSES)
    assert labels[3].tolist() == [0, 4, 3, 1 + COLORS.index("green"), 0, 0, 0]


def test_unreliable_relation_captions_name_the_opposite_relation_at_the_configured_rate():
    scenes = iter(RenderedScenes(seed=0, resolution=32, prompt_dropout=0.0, relation_caption_accuracy=0.7))
    images, specs = [], []
    while len(specs) < 400:
        image, prompt = next(scenes)
        spec = parse_prompt(prompt)
        if spec.relation is not None:
            images.append(((image.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy())
            specs.append(spec)
    agrees = [s["position"] == 1.0 for s in score_images(np.stack(images), specs)]
    assert 0.63 < np.mean(agrees) < 0.77  # 0.7 +- 3 standard errors
    with pytest.raises(ValueError, match="relation_caption_accuracy"):
        PretrainConfig(relation_caption_accuracy=0.2)
    with pytest.raises(ValueError, match="parse_weight"):
        PretrainConfig(parse_weight=1.0, train_text_encoder=False)


@pytest.mark.slow
def test_the_parse_objective_keeps_opposite_relations_apart(tiny_shapes, tmp_path):
    from trainer_core.shapes.grammar import OPPOSITE_RELATIONS, sample_spec

    rng = random.Random(0)
    specs = [sample_spec(rng, "position") for _ in range(32)]
    opposite = [SceneSpec(s.groups, OPPOSITE_RELATIONS[s.relation]) for s in specs]

    def relative_gap(parse_weight: float) -> float:
        config = PretrainConfig(steps=150, batch_size=16, warmup_steps=10, model=tiny_shapes, parse_weight=parse_weight)
        pipe = pretrain_shapes(config, tmp_path / str(parse_weight), progress=False)
        with torch.no_grad():
            a, _ = pipe.encode_prompt([s.prompt for s in specs])
            b, _ = pipe.encode_prompt([s.prompt for s in opposite])
        return float(((a - b)[:, -1].norm(dim=-1) / a[:, -1].norm(dim=-1)).mean())

    assert relative_gap(1.0) > 2 * relative_gap(0.0)


@pytest.mark.slow
def test_pretraining_lowers_the_flow_matching_loss(tiny_shapes, tmp_path):
    from trainer_core.shapes.pipeline import build_shapes_pipeline
    from trainer_core.shapes.pretrain import RenderedScenes, flow_matching_loss

    config = PretrainConfig(
        steps=60, batch_size=16, learning_rate=2e-3, warmup_steps=5, ema_decay=0.0, model=tiny_shapes
    )
    stream = iter(RenderedScenes(seed=99, resolution=32, prompt_dropout=0.0))
    batch = [next(stream) for _ in range(32)]
    images = torch.stack([image for image, _ in batch])
    prompts = [prompt for _, prompt in batch]

    def held_out_loss(pipe) -> float:
        with torch.no_grad():
            return float(flow_matching_loss(pipe, images, prompts, torch.Generator().manual_seed(0))[0])

    before = held_out_loss(build_shapes_pipeline(tiny_shapes, seed=config.seed))
    after = held_out_loss(pretrain_shapes(config, tmp_path / "run", progress=False))
    assert after < 0.7 * before


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="learning_rate"):
        PretrainConfig(learning_rate=0)
    with pytest.raises(ValueError, match="ema_decay"):
        PretrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="resolution"):
        ShapesModelConfig(resolution=30)
    with pytest.raises(ValueError, match="attention_levels"):
        ShapesModelConfig(attention_levels=5)
    with pytest.raises(ValueError, match="time_shift"):
        PretrainConfig(time_shift=0)


def test_noise_levels_shift_toward_high_noise_and_are_unchanged_without_shift():
    from trainer_core.shapes.pretrain import training_noise_levels

    plain = torch.sigmoid(torch.randn(20_000, generator=torch.Generator().manual_seed(5)))
    assert torch.equal(training_noise_levels(20_000, torch.Generator().manual_seed(5)), plain)
    shifted = training_noise_levels(20_000, torch.Generator().manual_seed(5), time_shift=3.0)
    assert torch.all(shifted >= plain) and torch.all((shifted > 0) & (shifted < 1))
    # t > 0.9 <=> the unshifted draw > 0.75: P(N(0,1) > log 3) = 0.1357
    assert abs(float((shifted > 0.9).float().mean()) - 0.1357) < 0.01
    assert float((plain > 0.9).float().mean()) < 0.02


def _velocity(pipe: ShapesPipeline, pooled_offset: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 32, 32, generator=generator)
    with torch.no_grad():
        states, pooled = pipe.encode_prompt(["a red circle left of a blue square", "two green triangles"])
        return pipe.velocity(z, torch.tensor([0.9, 0.5]), states, pooled + pooled_offset)


def test_pooled_modulation_and_coordinate_channels_reach_the_velocity_and_survive_saving(tiny_shapes, tmp_path):
    import dataclasses

    from trainer_core.shapes.pipeline import build_shapes_pipeline, coordinate_planes

    plain = build_shapes_pipeline(tiny_shapes, seed=1)
    assert torch.equal(_velocity(plain), _velocity(plain, pooled_offset=1.0))  # the pooled embedding is unused

    config = dataclasses.replace(tiny_shapes, pooled_modulation=True, coordinate_channels=True)
    pipe = build_shapes_pipeline(config, seed=1)
    assert pipe.unet.config.in_channels == 5 and pipe.unet.config.resnet_time_scale_shift == "scale_shift"
    assert not torch.allclose(_velocity(pipe), _velocity(pipe, pooled_offset=1.0))
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = ShapesPipeline.from_pretrained(tmp_path / "pipe", local_files_only=True)
    assert torch.equal(_velocity(loaded), _velocity(pipe))

    planes = coordinate_planes(torch.zeros(1, 3, 4, 6))
    assert planes.shape == (1, 2, 4, 6)
    assert planes[0, 0, 2, 0] == -1 and planes[0, 0, 2, -1] == 1  # x runs left to right
    assert planes[0, 1, 0, 3] == -1 and planes[0, 1, -1, 3] == 1  # y runs top to bottom
