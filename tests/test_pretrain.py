import pytest
import torch

from trainer_core.shapes.pipeline import ShapesModelConfig, ShapesPipeline
from trainer_core.shapes.pretrain import PretrainConfig, pretrain_shapes


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
            return float(flow_matching_loss(pipe, images, prompts, torch.Generator().manual_seed(0)))

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
