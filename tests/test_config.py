import dataclasses
import itertools
import typing

import pytest
import yaml

from trainer_core.config import (
    ConfigError,
    DiffusionNFTConfig,
    FlowGRPOConfig,
    LoggingConfig,
    MixGRPOConfig,
    ModelConfig,
    OptimizerConfig,
    ResourcesConfig,
    RolloutConfig,
    TrainConfig,
    dump_config,
    field_docs,
    from_dict,
    load_config,
    load_preset,
    preset_names,
)
from trainer_core.lora import LoraSpec
from trainer_core.rewards.base import RewardMixConfig
from trainer_core.vgrpo import VGRPOConfig


def test_yaml_round_trip_is_lossless(tmp_path):
    config = TrainConfig(
        iterations=7,
        rollout=RolloutConfig(group_size=4, solver="heun"),
        vgrpo=VGRPOConfig(n_mc=2, pair_sharing="batch", beta=0.3),
        lora=LoraSpec(rank=4, alpha=4, target_modules=("to_q", "to_v")),
        rewards=RewardMixConfig({"partial": 1.0, "count": 0.5}, "normalize_then_sum"),
    )
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_presets_load():
    assert {"shapes-smoke", "shapes-geneval", "shapes-compress"} <= set(preset_names())
    for name in preset_names():
        assert isinstance(load_preset(name), TrainConfig)
    with pytest.raises(ConfigError, match="preset: unknown 'nope'"):
        load_preset("nope")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"optimizer": {"learning_rate": -1}}, r"optimizer\.learning_rate: must be a positive number"),
        ({"optimizer": {"learning_rate": "abc"}}, r"optimizer\.learning_rate: must be a number, got 'abc'"),
        ({"rewards": {"weights": {"geneval": 0}}}, r"rewards\.weights: must sum to a positive number, got 0"),
        ({"vgrpo": {"n_mc": 0}}, r"vgrpo\.n_mc: must be at least 1"),
        ({"vgrpo": {"nmc": 4}}, r"vgrpo\.nmc: unknown field"),
        ({"rollout": {"solver": "ddim"}}, r"rollout\.solver: must be one of"),
        ({"rollout": {"group_size": 1}}, r"rollout\.group_size: must be at least 2"),
        ({"model": {"name": ""}}, r"model\.name"),
        ({"lora": {"rank": 2.5}}, r"lora\.rank: must be an integer"),
        ({"iterations": 0}, r"iterations: must be at least 1"),
        ({"time_budget_minutes": -5}, r"time_budget_minutes: must be a non-negative number \(0: no limit\), got -5"),
        ({"algorithm": "ppo"}, r"algorithm: must be one of"),
        ({"optimizer": {"lr_schedule": "step"}}, r"optimizer\.lr_schedule: must be one of constant, linear, cosine"),
        ({"optimizer": {"final_lr_fraction": 1.5}}, r"optimizer\.final_lr_fraction: must be in \[0, 1\]"),
        (
            {"rollout": {"prompts_per_iteration": 8, "candidate_prompts": 6}},
            r"rollout\.candidate_prompts: must be 0 \(no selection\) or at least prompts_per_iteration \(8\), got 6",
        ),
    ],
)
def test_bad_values_name_their_field(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(TrainConfig, data)


def test_every_field_is_documented_once_in_its_docstring():
    for cls in (
        TrainConfig,
        ModelConfig,
        RolloutConfig,
        VGRPOConfig,
        OptimizerConfig,
        LoraSpec,
        RewardMixConfig,
        LoggingConfig,
        FlowGRPOConfig,
        MixGRPOConfig,
        DiffusionNFTConfig,
        ResourcesConfig,
    ):
        docs = field_docs(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):  # a section, documented in its own class
                continue
            assert f.name in docs, f"{cls.__name__}.{f.name} has no docstring line"


def test_dumped_yaml_has_one_section_per_concern():
    data = yaml.safe_load(dump_config(TrainConfig()))
    assert set(data) == {
        "algorithm",
        "iterations",
        "time_budget_minutes",
        "seed",
        "model",
        "rollout",
        "vgrpo",
        "flow_grpo",
        "mix_grpo",
        "nft",
        "optimizer",
        "lora",
        "rewards",
        "logging",
        "resources",
    }


def test_resources_are_checked_by_field():
    with pytest.raises(ConfigError, match=r"resources\.devices: must be a whole number from 1 to 64, got 0"):
        from_dict(TrainConfig, {"resources": {"devices": 0}})
    with pytest.raises(ConfigError, match=r"resources\.devices: at most the prompt groups rolled out .*\(2\).*got 3"):
        from_dict(TrainConfig, {"rollout": {"prompts_per_iteration": 2}, "resources": {"devices": 3}})
    assert from_dict(TrainConfig, {"resources": {"devices": 2}}).resources.devices == 2
    with pytest.raises(ConfigError, match=r"resources\.fsdp: .*needs devices >= 2"):
        from_dict(TrainConfig, {"resources": {"fsdp": True}})
    with pytest.raises(ConfigError, match=r"resources\.fsdp: needs rollout\.prompts_per_iteration \(3\)"):
        from_dict(TrainConfig, {"rollout": {"prompts_per_iteration": 3}, "resources": {"devices": 2, "fsdp": True}})


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_learning_rate_schedules_start_at_the_rate_and_end_at_the_final_fraction(schedule):
    opt = OptimizerConfig(learning_rate=1e-3, lr_schedule=schedule, final_lr_fraction=0.1)
    factors = [opt.lr_factor(i, 11) for i in range(11)]
    assert factors[0] == pytest.approx(1.0)
    assert factors[-1] == pytest.approx(1.0 if schedule == "constant" else 0.1)
    assert all(a >= b for a, b in itertools.pairwise(factors))  # never rises
    middle = {"constant": 1.0, "linear": 0.55, "cosine": 0.55}[schedule]
    assert factors[5] == pytest.approx(middle)
    # cosine stays higher than linear early on and lower late
    if schedule == "cosine":
        linear = OptimizerConfig(lr_schedule="linear", final_lr_fraction=0.1)
        assert opt.lr_factor(2, 11) > linear.lr_factor(2, 11) and opt.lr_factor(8, 11) < linear.lr_factor(8, 11)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rollout": {"group_size": 100_000_000}}, r"rollout\.group_size: must be at most 1,024, got 100,000,000"),
        (
            {"rollout": {"prompts_per_iteration": 512, "group_size": 64}},
            r"rollout\.group_size: 512 prompt groups x 64 images is 32,768 images per iteration; at most 16,384",
        ),
        ({"model": {"resolution": 1004}}, r"model\.resolution: must be a multiple of 8, got 1004"),
        ({"model": {"resolution": 65536}}, r"model\.resolution: must be at most 4,096"),
        ({"lora": {"rank": 10**9}}, r"lora\.rank: must be at most 1,024"),
        ({"vgrpo": {"n_mc": 5000}}, r"vgrpo\.n_mc: must be at most 1,024"),
        ({"iterations": 10**12}, r"iterations: must be at most 1,000,000"),
        ({"seed": -3}, r"seed: must be non-negative, got -3"),
        ({"optimizer": {"learning_rate": float("nan")}}, r"optimizer\.learning_rate: must be a finite number"),
        ({"optimizer": {"weight_decay": ".inf"}}, r"optimizer\.weight_decay: must be a number"),
        ({"vgrpo": {"beta": float("inf")}}, r"vgrpo\.beta: must be a finite number, got inf"),
        ({"logging": {"sample_prompts": ["x" * 5000]}}, r"logging\.sample_prompts\[0\]: at most 4096 characters"),
        ({"logging": {"sample_prompts": ["a red circle"] * 65}}, r"logging\.sample_prompts: at most 64 prompts"),
        ({1: 2, "seed": 0}, r"^config: unknown field '1'"),
        ({"rollout": {"prompts": ["a"] * 10_000}}, r"rollout\.prompts: must be a string, got \['a', .{20,}\.\.\.$"),
    ],
)
def test_sizes_and_numbers_are_bounded_by_field(data, message):
    """A config that would allocate terabytes, or carries NaN / inf, or strings the size of a file, is
    refused naming the field and the limit; the error quotes at most a short, cut value."""
    with pytest.raises(ConfigError, match=message):
        from_dict(TrainConfig, data)
