import os
from collections.abc import Callable

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from trainer_core.config import LoggingConfig, ModelConfig, RolloutConfig, TrainConfig
from trainer_core.lora import LoraSpec
from trainer_core.rewards.base import RewardMixConfig
from trainer_core.shapes.pipeline import ShapesModelConfig, build_shapes_pipeline
from trainer_core.vgrpo import VGRPOConfig


@pytest.fixture(scope="session")
def tiny_shapes() -> ShapesModelConfig:
    """A randomly initialised shapes model small enough for unit tests."""
    return ShapesModelConfig(channels=(8, 16), attention_levels=1, head_dim=8, text_dim=16, text_layers=1)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_shapes) -> str:
    """Path of the tiny model saved as a diffusers pipeline directory."""
    path = tmp_path_factory.mktemp("tiny") / "shapes-tiny"
    build_shapes_pipeline(tiny_shapes, seed=3).save_pretrained(path)
    return str(path)


@pytest.fixture
def tiny_config(tiny_model) -> Callable[..., TrainConfig]:
    """TrainConfig factory for the tiny model: 2 iterations of 2 prompts x 4 images; keyword changes override."""

    def make(**changes) -> TrainConfig:
        base = {
            "iterations": 2,
            "model": ModelConfig(name=tiny_model, device="cpu"),
            "rollout": RolloutConfig(prompts_per_iteration=2, group_size=4, steps=3, solver="euler", batch_size=16),
            "vgrpo": VGRPOConfig(n_mc=2, gradient_steps=2),
            "lora": LoraSpec(rank=2, alpha=2),
            "rewards": RewardMixConfig({"jpeg_incompressibility": 1.0}),
            "logging": LoggingConfig(
                sample_every=1, checkpoint_every=1, sample_prompts=("a red circle",), sample_seeds=2
            ),
        }
        base.update(changes)
        return TrainConfig(**base)

    return make


POSTGRES_ENV = "VGRPO_TEST_POSTGRES_URL"


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A fresh, empty database: a SQLite file always, and the PostgreSQL server `.ci/postgres.sh` starts.

    Outside CI, without a server, the PostgreSQL half is skipped with the reason shown by `-ra`.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'studio.db'}"
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{POSTGRES_ENV} is not set: .ci/run must start PostgreSQL (.ci/postgres.sh)")
        pytest.skip(f"no PostgreSQL server: set {POSTGRES_ENV} (bash .ci/postgres.sh prints one)")
    _reset_postgres(url)
    return url
