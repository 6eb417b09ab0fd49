import random

import numpy as np
import pytest

from trainer_core.rewards.base import Reward, RewardError, RewardMix, RewardMixConfig
from trainer_core.rewards.builtin import JpegCompressibility, builtin_rewards
from trainer_core.shapes.grammar import parse_prompt
from trainer_core.shapes.render import render_spec


class Constant(Reward):
    def __init__(self, name: str, values: list[float], higher_is_better: bool = True) -> None:
        self.name, self.values, self.higher_is_better = name, values, higher_is_better

    def score(self, images, prompts):
        return np.asarray(self.values)


def images(n: int) -> np.ndarray:
    return np.zeros((n, 8, 8, 3), np.uint8)


def test_shapes_rewards_score_rendered_scenes():
    rng = random.Random(0)
    prompts = ["two red circles left of a blue square", "a green triangle"]
    rendered = np.stack([render_spec(parse_prompt(p), rng)[0] for p in prompts])
    rewards = builtin_rewards()
    for name in ("geneval", "partial", "count", "color", "position"):
        assert rewards[name].score(rendered, prompts).tolist() == [1.0, 1.0]
    swapped = rewards["geneval"].score(rendered, prompts[::-1])
    assert swapped.tolist() == [0.0, 0.0]


def test_jpeg_rewards_prefer_flat_or_busy_images():
    flat = np.full((1, 32, 32, 3), 128, np.uint8)
    busy = np.random.default_rng(0).integers(0, 255, (1, 32, 32, 3), dtype=np.uint8)
    batch = np.concatenate([flat, busy])
    compress = JpegCompressibility().score(batch, ["", ""])
    incompress = JpegCompressibility(incompressible=True).score(batch, ["", ""])
    assert compress[0] > compress[1] and incompress[1] > incompress[0]
    assert incompress.tolist() == pytest.approx((-compress).tolist())


def test_sum_then_normalize_and_normalize_then_sum_differ_as_designed():
    big = Constant("big", [0.0, 100.0, 0.0, 100.0])
    small = Constant("small", [1.0, 0.0, 0.0, 1.0])
    rewards = {"big": big, "small": small}
    summed = RewardMix(rewards, RewardMixConfig({"big": 1.0, "small": 1.0}, "sum_then_normalize"))
    mixed = RewardMix(rewards, RewardMixConfig({"big": 1.0, "small": 1.0}, "normalize_then_sum"))
    scores = summed.score(images(4), [""] * 4)
    a_sum = summed.advantages(scores, group_size=4)
    a_mix = mixed.advantages(scores, group_size=4)
    # Summed, the big reward decides the order; normalised first, both count equally.
    assert a_sum[1] > a_sum[0] and a_sum[3] > a_sum[0]
    assert a_mix.tolist() == pytest.approx([0.0, 0.0, -2.0, 2.0], abs=1e-3)
    assert summed.combined(scores).tolist() == [1.0, 100.0, 0.0, 101.0]


def test_the_mix_passes_its_advantage_std_on():
    rewards = {"r": Constant("r", [1.0, 0.0, 0.0, 1.0, 0.1, 0.0, 0.0, 0.1])}
    group = RewardMix(rewards, RewardMixConfig({"r": 1.0}))
    batch = RewardMix(rewards, RewardMixConfig({"r": 1.0}, advantage_std="batch"))
    scores = group.score(images(8), [""] * 8)
    a_group, a_batch = group.advantages(scores, 4), batch.advantages(scores, 4)
    assert float(a_group[4:].abs().max()) == pytest.approx(1.0, abs=1e-2)
    assert float(a_batch[4:].abs().max()) < 0.2 < float(a_batch[:4].abs().min())


def test_lower_is_better_rewards_are_flipped():
    mix = RewardMix({"loss": Constant("loss", [1.0, 3.0], higher_is_better=False)}, RewardMixConfig({"loss": 1.0}))
    assert mix.score(images(2), ["", ""])["loss"].tolist() == [-1.0, -3.0]


def test_nan_or_failing_rewards_name_the_reward():
    class Broken(Reward):
        name = "broken"

        def score(self, images, prompts):
            raise RuntimeError("model file missing")

    nan = RewardMix({"nanny": Constant("nanny", [0.5, float("nan")])}, RewardMixConfig({"nanny": 1.0}))
    with pytest.raises(RewardError, match=r"reward 'nanny' returned 1 non-finite score\(s\), first for image 1"):
        nan.score(images(2), ["a", "b"])
    broken = RewardMix({"broken": Broken()}, RewardMixConfig({"broken": 1.0}))
    with pytest.raises(RewardError, match="reward 'broken' failed: model file missing"):
        broken.score(images(2), ["a", "b"])
    short = RewardMix({"short": Constant("short", [1.0])}, RewardMixConfig({"short": 1.0}))
    with pytest.raises(RewardError, match="reward 'short' returned shape"):
        short.score(images(2), ["a", "b"])


def test_mix_config_validation():
    with pytest.raises(ValueError, match=r"rewards\.weights: must sum to a positive number, got 0"):
        RewardMixConfig({"geneval": 0.0})
    with pytest.raises(ValueError, match=r"rewards\.aggregation"):
        RewardMixConfig({"geneval": 1.0}, "product")
    with pytest.raises(ValueError, match=r"rewards\.advantage_std: must be one of group, batch, got 'global'"):
        RewardMixConfig({"geneval": 1.0}, advantage_std="global")
    with pytest.raises(ValueError, match="unknown reward 'aesthetic'"):
        RewardMix(builtin_rewards(), RewardMixConfig({"aesthetic": 1.0}))


def test_group_spread_measures_what_each_aggregation_normalises():
    a = Constant("a", [0.0, 0.0, 1.0, 3.0, 2.0, 2.0, 2.0, 2.0])
    b = Constant("b", [1.0, 0.0, 0.0, 0.0, 5.0, 5.0, 5.0, 5.0])
    summed = RewardMix({"a": a, "b": b}, RewardMixConfig({"a": 1.0, "b": 2.0}))
    mixed = RewardMix({"a": a, "b": b}, RewardMixConfig({"a": 1.0, "b": 2.0}, "normalize_then_sum"))
    scores = summed.score(images(8), [""] * 8)
    # combined = a + 2b: [2, 0, 1, 3] then a tie at 12
    assert summed.group_spread(scores, 4).tolist() == pytest.approx([np.std([2, 0, 1, 3]), 0.0])
    expected = np.std([0, 0, 1, 3]) + 2 * np.std([1, 0, 0, 0])
    assert mixed.group_spread(scores, 4).tolist() == pytest.approx([expected, 0.0])
