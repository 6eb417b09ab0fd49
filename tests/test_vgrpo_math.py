"""The mathematics of V-GRPO on small tensors and a tiny model."""

import math

import pytest
import torch

from trainer_core.vgrpo import (
    VGRPOConfig,
    draw_pairs,
    elbo_surrogate,
    group_advantages,
    stratified_timesteps,
    vgrpo_loss,
    within_group_cv,
)


def test_stratified_sampler_puts_one_t_in_each_stratum():
    n_mc = 4
    t = stratified_timesteps(500, n_mc, shift=1.0, generator=torch.Generator().manual_seed(0))
    strata = (t * n_mc).floor().long()
    assert torch.equal(strata, torch.arange(n_mc).expand(500, n_mc))


def test_stratified_sampler_strata_follow_the_time_shift():
    shift, n_mc = 3.0, 4
    t = stratified_timesteps(500, n_mc, shift=shift, generator=torch.Generator().manual_seed(1))
    unshifted = t / (shift - (shift - 1) * t)  # inverse of s u / (1 + (s - 1) u)
    assert torch.equal((unshifted * n_mc).floor().long(), torch.arange(n_mc).expand(500, n_mc))


@pytest.mark.parametrize("sharing", ["group", "batch", "none"])
def test_pairs_are_shared_exactly_as_configured(sharing):
    config = VGRPOConfig(n_mc=3, pair_sharing=sharing)
    t, eps = draw_pairs(4, 5, (3, 8, 8), config, 1.0, torch.Generator().manual_seed(0))
    assert t.shape == (20, 3) and eps.shape == (20, 3, 3, 8, 8)
    groups_t, groups_eps = t.view(4, 5, 3), eps.view(4, 5, 3, 3, 8, 8)
    same_in_group = all(torch.equal(groups_eps[g, 0], groups_eps[g, i]) for g in range(4) for i in range(5))
    same_across_groups = torch.equal(groups_eps[0, 0], groups_eps[1, 0])
    assert same_in_group == (sharing != "none")
    assert same_across_groups == (sharing == "batch")
    assert torch.equal(groups_t[0, 0], groups_t[0, 1]) == (sharing != "none")


def test_group_advantages_are_normalised_per_group():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 5.0, 5.0, 5.0])
    adv = group_advantages(rewards, group_size=4)
    assert adv[:4].tolist() == pytest.approx([1.0, -1.0, -1.0, 1.0], abs=1e-3)
    assert adv[4:].abs().max() == 0  # a group with one reward value teaches nothing
    soft = group_advantages(torch.tensor([0.0, 0.0, 0.0, 10.0]), 4, soft_clip_eta=1.0)
    assert soft.abs().max() <= 1.0


def test_batch_std_keeps_near_ties_small():
    # Group 1: clear winners and losers; group 2: the same order with differences 10 times smaller.
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.1, 0.0, 0.0, 0.1])
    per_group = group_advantages(rewards, 4, std_scope="group")
    per_batch = group_advantages(rewards, 4, std_scope="batch")
    assert per_group[4:].tolist() == pytest.approx(per_group[:4].tolist(), abs=1e-2)  # blown up to unit scale
    assert per_batch[4:].tolist() == pytest.approx((per_batch[:4] / 10).tolist(), rel=1e-3)
    centred = rewards.view(2, 4) - rewards.view(2, 4).mean(1, keepdim=True)
    assert float(per_batch.pow(2).mean()) == pytest.approx(1.0, abs=1e-3)  # unit variance over the batch
    assert per_batch.tolist() == pytest.approx((centred.flatten() / centred.pow(2).mean().sqrt()).tolist(), abs=1e-3)
    with pytest.raises(ValueError, match="std_scope: must be one of group, batch"):
        group_advantages(rewards, 4, std_scope="prompt")


def test_loss_is_odd_in_the_advantages_at_theta_old():
    surrogate = torch.randn(12)
    advantages = torch.randn(12)
    plus = vgrpo_loss(surrogate, surrogate.clone(), advantages, clip_epsilon=0.01)
    minus = vgrpo_loss(surrogate, surrogate.clone(), -advantages, clip_epsilon=0.01)
    assert float(plus.loss) == pytest.approx(-float(minus.loss))
    assert plus.ratio_mean == 1.0 and plus.clip_fraction == 0.0


def test_ratio_clip_stops_the_gradient_beyond_epsilon():
    surrogate_old = torch.zeros(4)
    surrogate = torch.tensor([0.5, -0.5, 0.001, -0.001], requires_grad=True)
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    terms = vgrpo_loss(surrogate, surrogate_old, advantages, clip_epsilon=0.01)
    terms.loss.backward()
    assert surrogate.grad[:2].abs().max() == 0  # pushed past the clip in the advantage's direction
    assert surrogate.grad[2:].abs().min() > 0
    assert terms.clip_fraction == 0.5
    expected = (math.exp(0.5) - 1 + 1 - math.exp(-0.5) + math.exp(0.001) - 1 + 1 - math.exp(-0.001)) / 4
    assert terms.ratio_abs_dev == pytest.approx(expected)


def _linear_velocity():
    """A tiny 'model': v = a * z + b, with a, b trainable."""
    a = torch.nn.Parameter(torch.tensor(0.3))
    b = torch.nn.Parameter(torch.zeros(3, 4, 4))
    return (lambda z, t: a * z + b), [a, b]


def test_surrogate_shapes_and_parameterisations():
    velocity, _ = _linear_velocity()
    images = torch.randn(6, 3, 4, 4)
    config = VGRPOConfig(n_mc=4)
    t, eps = draw_pairs(3, 2, (3, 4, 4), config, 1.0, torch.Generator().manual_seed(0))
    for parameterisation in ("x", "v", "eps"):
        s, x_hat = elbo_surrogate(velocity, images, t, eps, parameterisation)
        assert s.shape == (6,) and x_hat.shape == (6, 4, 3, 4, 4)
        assert (s <= 0).all()


def test_a_positive_advantage_raises_the_surrogate_and_a_negative_lowers_it():
    images = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    config = VGRPOConfig(n_mc=4, pair_sharing="none")
    t, eps = draw_pairs(1, 2, (3, 4, 4), config, 1.0, torch.Generator().manual_seed(4))
    velocity, params = _linear_velocity()
    with torch.no_grad():
        s_old, _ = elbo_surrogate(velocity, images, t, eps)
    advantages = torch.tensor([1.0, -1.0])
    for i, sign in enumerate((1.0, -1.0)):
        velocity, params = _linear_velocity()
        optimizer = torch.optim.SGD(params, lr=1e-2)
        s, _ = elbo_surrogate(velocity, images[i : i + 1], t[i : i + 1], eps[i : i + 1])
        vgrpo_loss(s, s_old[i : i + 1], advantages[i : i + 1], clip_epsilon=0.0).loss.backward()
        optimizer.step()
        with torch.no_grad():
            s_new, _ = elbo_surrogate(velocity, images[i : i + 1], t[i : i + 1], eps[i : i + 1])
        assert sign * float(s_new - s_old[i]) > 0


def test_penalty_to_the_behaviour_policy_is_reported_and_weighted():
    s = torch.zeros(2)
    x_hat, x_old = torch.ones(2, 1, 3, 2, 2), torch.zeros(2, 1, 3, 2, 2)
    terms = vgrpo_loss(s, s, torch.tensor([1.0, -1.0]), 0.01, x_hat, x_old, beta=0.5)
    assert terms.kl == pytest.approx(1.0)
    assert float(terms.loss) == pytest.approx(0.5)


def test_within_group_cv():
    assert within_group_cv(torch.tensor([-2.0, -2.0, -1.0, -3.0]), 2) == pytest.approx(0.25)


def test_config_validation_names_fields():
    with pytest.raises(ValueError, match=r"vgrpo\.n_mc"):
        VGRPOConfig(n_mc=0)
    with pytest.raises(ValueError, match=r"vgrpo\.parameterisation"):
        VGRPOConfig(parameterisation="score")
    with pytest.raises(ValueError, match=r"vgrpo\.pair_sharing"):
        VGRPOConfig(pair_sharing="rank")
