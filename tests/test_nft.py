"""DiffusionNFT: its loss against the formula, the direction it pushes, and iterations on real layouts."""

import numpy as np
import pytest
import torch
from family_contract import prompts_file, small_config
from tiny_pipelines import tiny_sd3

from trainer_core.adapters import load_adapter
from trainer_core.algorithms import make_trainer
from trainer_core.config import ConfigError, DiffusionNFTConfig, TrainConfig, from_dict
from trainer_core.nft import nft_loss, optimality_probability
from trainer_core.rewards.base import RewardMix
from trainer_core.rewards.builtin import builtin_rewards


def _inputs(seed: int = 0, n: int = 5):
    g = torch.Generator().manual_seed(seed)
    x0, eps = (
        torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64),
        torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64),
    )
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.05
    x_t = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * eps
    v_old = eps - x0 + 0.3 * torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64)
    v = v_old + 0.1 * torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64)
    r = torch.rand(n, generator=g, dtype=torch.float64)
    return v, v_old, x0, x_t, t, r


@pytest.mark.parametrize("beta", [1.0, 0.3])
def test_the_loss_is_the_references_formula(beta):
    """The reference's policy loss (NVlabs' train_nft_sd3.py), written out from its formula."""
    v, v_old, x0, x_t, t, r = _inputs()
    tt = t.view(-1, 1, 1, 1)
    x0_pos = x_t - tt * (beta * v + (1 - beta) * v_old)
    x0_neg = x_t - tt * ((1 + beta) * v_old - beta * v)
    w_pos = (x0_pos - x0).abs().mean(dim=(1, 2, 3), keepdim=True).clip(min=1e-5)
    w_neg = (x0_neg - x0).abs().mean(dim=(1, 2, 3), keepdim=True).clip(min=1e-5)
    expected = (
        r * ((x0_pos - x0) ** 2 / w_pos).mean(dim=(1, 2, 3)) / beta
        + (1 - r) * ((x0_neg - x0) ** 2 / w_neg).mean(dim=(1, 2, 3)) / beta
    )
    torch.testing.assert_close(nft_loss(v, v_old, x0, x_t, t, r, beta), expected, atol=1e-12, rtol=1e-12)


def test_optimality_probability_maps_clipped_advantages_to_zero_one():
    r = optimality_probability(torch.tensor([-10.0, -5.0, 0.0, 2.5, 5.0, 7.0]), 5.0)
    assert r.tolist() == [0.0, 0.0, 0.5, 0.75, 1.0, 1.0]


def test_at_the_old_policy_good_images_pull_toward_the_data_and_bad_ones_push_away():
    _, v_old, x0, x_t, t, _ = _inputs(1)
    tt = t.view(-1, 1, 1, 1)

    def gradient(r: float) -> torch.Tensor:
        v = v_old.clone().requires_grad_(True)
        nft_loss(v, v_old, x0, x_t, t, torch.full_like(t, r), 1.0).sum().backward()
        return v.grad

    # the plain flow-matching error's gradient direction at v_old: d/dv |x_t - t v - x0|^2
    toward_data = -(x_t - tt * v_old - x0) * tt
    assert torch.allclose(gradient(0.5), torch.zeros_like(v_old), atol=1e-12)  # no preference: no push
    good, bad = gradient(1.0), gradient(0.0)
    assert (good * toward_data).sum() > 0 and (bad * toward_data).sum() < 0
    torch.testing.assert_close(good, -bad)
    # a small step down the gradient lowers the error for a good image and raises it for a bad one
    error = lambda v: ((x_t - tt * v - x0) ** 2).mean()  # noqa: E731
    assert error(v_old - 0.01 * good) < error(v_old) < error(v_old - 0.01 * bad)


def test_config_names_its_fields():
    with pytest.raises(ConfigError, match=r"nft\.beta"):
        DiffusionNFTConfig(beta=0)
    with pytest.raises(ConfigError, match=r"nft\.timesteps"):
        DiffusionNFTConfig(timesteps=0)
    with pytest.raises(ConfigError, match=r"nft\.old_decay_max"):
        DiffusionNFTConfig(old_decay_max=1.0)


def _lora(adapter) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in adapter.denoiser.named_parameters() if "lora_" in k}


def test_one_iteration_trains_only_the_lora_and_moves_the_sampling_policy_after_it(tiny_model, tiny_config):
    config = tiny_config(algorithm="diffusion-nft", nft=DiffusionNFTConfig(gradient_steps=2, old_decay_rate=0.2))
    adapter = load_adapter(tiny_model, "cpu")
    trainer = make_trainer(adapter, RewardMix(builtin_rewards(), config.rewards), config)
    base = {k: v.clone() for k, v in adapter.denoiser.named_parameters() if "lora_" not in k}
    old_before = [w.clone() for w in trainer.old_weights]
    metrics = trainer.step()
    for key in ("loss", "kl", "grad_norm", "old_deviation", "reward_mean"):
        assert np.isfinite(metrics[key]), key
    after = dict(adapter.denoiser.named_parameters())
    assert all(torch.equal(after[k], v) for k, v in base.items())
    trained = [p.detach() for p in trainer.parameters]
    assert any(not torch.equal(t, o) for t, o in zip(trained, old_before, strict=True))
    # after 2 optimiser steps, decay min(0.2 x 2, 0.5) = 0.4: old = 0.4 old + 0.6 trained
    for old, before, now in zip(trainer.old_weights, old_before, trained, strict=True):
        torch.testing.assert_close(old, 0.4 * before + 0.6 * now)
    # the trainer's state carries the sampling policy, and restores it
    state = trainer.state_dict()
    fresh = make_trainer(load_adapter(tiny_model, "cpu"), RewardMix(builtin_rewards(), config.rewards), config)
    fresh.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(fresh.old_weights, trainer.old_weights, strict=True))
    assert fresh.optimiser_steps == 2


def test_rollouts_come_from_the_sampling_policy_and_leave_the_trained_weights(tiny_model, tiny_config):
    config = tiny_config(algorithm="diffusion-nft")
    adapter = load_adapter(tiny_model, "cpu")
    trainer = make_trainer(adapter, RewardMix(builtin_rewards(), config.rewards), config)
    with torch.no_grad():
        for param in trainer.parameters:
            param.normal_(std=0.05)
    trained = _lora(adapter)
    prompts = ["a red circle", "two blue squares"]
    state = trainer.generator.get_state()
    at_old = trainer.generate(prompts)[0].latents
    assert all(torch.equal(v, trained[k]) for k, v in _lora(adapter).items())
    trainer.generator.set_state(state)
    at_trained = trainer.ode_rollouts(prompts).latents
    assert not torch.allclose(at_old, at_trained)  # the old LoRA is still the initial (zero) one
    trainer.generator.set_state(state)
    with torch.no_grad():
        for param in trainer.parameters:
            param.zero_()
    torch.testing.assert_close(trainer.ode_rollouts(prompts).latents, at_old)


def test_one_iteration_on_a_tiny_sd3(tmp_path):
    model = tiny_sd3(tmp_path)
    config = small_config(model, prompts_file(tmp_path))
    config.update(algorithm="diffusion-nft", nft={"timesteps": 2})
    train_config = from_dict(TrainConfig, config)
    adapter = load_adapter(model, "cpu")
    trainer = make_trainer(adapter, RewardMix(builtin_rewards(), train_config.rewards), train_config)
    lora_before = _lora(adapter)
    metrics = trainer.step()
    assert metrics["grad_norm"] > 0 and np.isfinite(metrics["loss"])
    assert any(not torch.equal(v, lora_before[k]) for k, v in _lora(adapter).items())
    assert metrics["nfe"] == 4 * 2 + (2 + 2 + 3 * 2) * 4  # 2 Euler steps x 4 images; old, reference, 1 step
