"""The MDP baselines: the SDE step, its log-prob, MixGRPO's window, and one iteration of each method."""

import math

import numpy as np
import pytest
import torch

from trainer_core.adapters import load_adapter
from trainer_core.algorithms import make_trainer
from trainer_core.config import ConfigError, FlowGRPOConfig, MixGRPOConfig, RolloutConfig, TrainConfig, from_dict
from trainer_core.mdp_trainer import sde_window
from trainer_core.rewards.base import RewardMix
from trainer_core.rewards.builtin import builtin_rewards
from trainer_core.sde import gaussian_log_prob, reference_kl, sde_sigma, sde_step_mean_std


def test_sde_step_mean_and_variance_match_the_formula():
    torch.manual_seed(0)
    z, v = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    t, t_next, a, t_cap = 0.6, 0.45, 0.7, 0.9
    mean, std = sde_step_mean_std(z, v, t, t_next, a, t_cap)
    # The formula written out independently: s_t = a sqrt(t / (1 - t)), dt = t_next - t.
    s_t = a * math.sqrt(t / (1 - t))
    dt = t_next - t
    expected_mean = z + (v + s_t**2 / (2 * t) * (z + (1 - t) * v)) * dt
    assert torch.allclose(mean, expected_mean, atol=1e-6)
    assert std == pytest.approx(s_t * math.sqrt(-dt))
    # Draws from the step have that mean and variance.
    draws = mean + std * torch.randn(20000, 3, 4, 4)
    assert torch.allclose(draws.mean(0), mean[0], atol=4 * std / math.sqrt(20000) * 1.5)
    assert draws.var(0).mean().item() == pytest.approx(std**2, rel=0.02)


def test_sde_sigma_is_capped_at_t_equal_one():
    z, v = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    mean, std = sde_step_mean_std(z, v, 1.0, 0.9, 0.7, t_cap=0.9)
    assert torch.isfinite(mean).all() and math.isfinite(std)
    # only the denominator is capped, as in flow_grpo: s_1 = a sqrt(1 / (1 - 0.9))
    assert std == pytest.approx(0.7 * math.sqrt(1 / 0.1) * math.sqrt(0.1))


def test_log_prob_of_the_sampled_next_state_is_the_gaussian_density():
    torch.manual_seed(1)
    z, v = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    mean, std = sde_step_mean_std(z, v, 0.5, 0.4, 0.7, 0.9)
    z_next = mean + std * torch.randn_like(mean)
    independent = torch.distributions.Normal(mean, std).log_prob(z_next).flatten(1).mean(1)
    assert torch.allclose(gaussian_log_prob(z_next, mean, std), independent, atol=1e-5)
    # Flow-GRPO's penalty is the KL between the two step Gaussians (Monte Carlo: E_p[log p - log q])
    # times |dt|: it divides by s_t^2, not by the step's variance s_t^2 |dt|.
    other = mean + 0.1 * torch.randn_like(mean)
    draws = mean + std * torch.randn(4000, *mean.shape)
    p = torch.distributions.Normal(mean, std)
    q = torch.distributions.Normal(other, std)
    mc = (p.log_prob(draws) - q.log_prob(draws)).mean(0).flatten(1).mean(1)
    sigma = sde_sigma(0.5, 0.7, 0.9)
    assert torch.allclose(reference_kl(mean, other, sigma), 0.1 * mc, rtol=0.1, atol=2e-4)


def test_step_log_prob_and_kl_equal_flow_grpo_and_mixgrpo_on_a_diffusers_grid():
    """flow_grpo's `sde_step_with_logprob` and its KL term in `train_sd3.py`, written out here from their
    formulas, on the sigmas of a diffusers scheduler; MixGRPO's `flow_grpo_step` is the same step."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from trainer_core.samplers import sigma_grid

    steps, shift, a = 10, 3.0, 0.7
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(sigmas=torch.linspace(1, 0, steps + 1)[:-1].tolist())
    sigmas = scheduler.sigmas.double()
    grid = sigma_grid(steps, shift).tolist()
    assert torch.allclose(sigmas, torch.tensor(grid, dtype=torch.float64), atol=1e-7)
    times = sigmas.tolist()  # the same numbers on both sides: the grids agree to float32 above
    t_cap = times[1]  # FlowGRPOTrainer's cap: the grid's second time
    generator = torch.Generator().manual_seed(0)
    shape = (3, 3, 8, 8)
    for i in range(steps - 1):  # the last step lands on t = 0, where flow_grpo's s_t is 0 too
        z = torch.randn(shape, generator=generator, dtype=torch.float64)
        v = torch.randn(shape, generator=generator, dtype=torch.float64)
        v_ref = v + 0.05 * torch.randn(shape, generator=generator, dtype=torch.float64)
        eps = torch.randn(shape, generator=generator, dtype=torch.float64)
        # the reference
        sigma, sigma_next, sigma_max = sigmas[i], sigmas[i + 1], sigmas[1]
        dt = sigma_next - sigma
        std_dev_t = torch.sqrt(sigma / (1 - (sigma_max if sigma == 1 else sigma))) * a
        ref_mean = z * (1 + std_dev_t**2 / (2 * sigma) * dt) + v * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt
        ref_std = std_dev_t * torch.sqrt(-dt)
        x = ref_mean + ref_std * eps
        ref_log_prob = -((x - ref_mean) ** 2) / (2 * ref_std**2) - torch.log(ref_std) - math.log(math.sqrt(2 * math.pi))
        ref_mean_other = (
            z * (1 + std_dev_t**2 / (2 * sigma) * dt) + v_ref * (1 + std_dev_t**2 * (1 - sigma) / (2 * sigma)) * dt
        )
        ref_kl = ((ref_mean - ref_mean_other) ** 2).mean(dim=(1, 2, 3)) / (2 * std_dev_t**2)
        # ours
        mean, std = sde_step_mean_std(z, v, times[i], times[i + 1], a, t_cap)
        mean_other, _ = sde_step_mean_std(z, v_ref, times[i], times[i + 1], a, t_cap)
        assert torch.allclose(mean, ref_mean, atol=1e-6, rtol=0), i
        assert std == pytest.approx(float(ref_std), abs=1e-6), i
        assert torch.allclose(gaussian_log_prob(x, mean, std), ref_log_prob.mean(dim=(1, 2, 3)), atol=1e-6, rtol=0), i
        kl = reference_kl(mean, mean_other, sde_sigma(times[i], a, t_cap))
        assert torch.allclose(kl, ref_kl, atol=1e-6, rtol=0), i


def test_with_noise_level_zero_the_sde_step_is_the_euler_step():
    z, v = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    mean, std = sde_step_mean_std(z, v, 0.7, 0.55, 0.0, 0.9)
    assert std == 0.0
    assert torch.allclose(mean, z + (0.55 - 0.7) * v)


def test_an_sde_step_must_run_backwards_in_time():
    with pytest.raises(ValueError, match="t_next < t"):
        sde_step_mean_std(torch.zeros(1, 1), torch.zeros(1, 1), 0.3, 0.4, 0.7, 0.9)


def test_mixgrpo_window_moves_as_configured():
    mix = MixGRPOConfig(window_size=3, window_start=1, window_stride=2, window_interval=5, window_last_start=1.0)
    starts = [sde_window(10, iteration, "mix-grpo", mix, iterations=30).start for iteration in range(0, 30)]
    assert starts[:5] == [1] * 5  # holds for window_interval iterations
    assert starts[5:10] == [3] * 5 and starts[10:15] == [5] * 5
    assert starts[15:] == [7] * 15  # holds at the end: 7 + 3 = 10 steps
    assert list(sde_window(10, 0, "mix-grpo", mix, iterations=30)) == [1, 2, 3]
    assert list(sde_window(10, 17, "flow-grpo", mix, iterations=30)) == list(range(10))


def test_mixgrpo_window_by_default_spreads_its_moves_over_the_run_and_never_reaches_the_last_steps():
    mix = MixGRPOConfig()
    starts = [sde_window(10, i, "mix-grpo", mix, iterations=100).start for i in range(100)]
    assert starts[0] == 0 and max(starts) == 5  # the start stops at half the steps
    assert starts == sorted(starts) and len(set(starts)) == 6
    assert [starts.index(k) for k in range(6)] == [0, 17, 34, 51, 68, 85]  # moves spread evenly
    assert max(max(sde_window(10, i, "mix-grpo", mix, iterations=100)) for i in range(100)) == 8
    # the reference's run: 25 steps, windows of 4, 300 iterations: a move every 24 iterations, start <= 12
    reference = [sde_window(25, i, "mix-grpo", mix, iterations=300).start for i in range(300)]
    assert max(reference) == 12 and reference.index(1) == 24


def test_mixgrpo_window_under_a_time_budget_moves_with_the_clock():
    # a budgeted run (the benchmarks') has no length in iterations: without the clock its window would
    # never leave the first steps
    mix = MixGRPOConfig()
    unbounded = 10**6
    starts = [sde_window(10, i, "mix-grpo", mix, unbounded, elapsed_fraction=i / 60).start for i in range(60)]
    assert starts[0] == 0 and max(starts) == 5 and starts == sorted(starts)
    assert [starts.index(k) for k in range(6)] == [0, 10, 20, 30, 40, 50]  # six positions, a sixth of the time each
    assert sde_window(10, 3, "mix-grpo", mix, unbounded, elapsed_fraction=1.0).start == 5  # holds at the end
    # iterations and clock: whichever is further on
    assert sde_window(10, 50, "mix-grpo", mix, iterations=60, elapsed_fraction=0.2).start == 5
    assert sde_window(10, 0, "mix-grpo", mix, iterations=60, elapsed_fraction=0.5).start == 3
    # a fixed interval counts iterations only
    fixed = MixGRPOConfig(window_interval=25, window_last_start=1.0)
    assert sde_window(10, 30, "mix-grpo", fixed, unbounded, elapsed_fraction=0.99).start == 1


def test_baseline_configs_name_their_fields():
    with pytest.raises(ConfigError, match=r"flow_grpo\.noise_level"):
        FlowGRPOConfig(noise_level=-1)
    with pytest.raises(ConfigError, match=r"flow_grpo\.timestep_fraction"):
        FlowGRPOConfig(timestep_fraction=0)
    with pytest.raises(ConfigError, match=r"mix_grpo\.window_interval"):
        MixGRPOConfig(window_interval=-1)
    with pytest.raises(ConfigError, match=r"mix_grpo\.window_last_start"):
        MixGRPOConfig(window_last_start=1.5)
    with pytest.raises(ConfigError, match=r"mix_grpo\.window_size"):
        TrainConfig(algorithm="mix-grpo", rollout=RolloutConfig(steps=3), mix_grpo=MixGRPOConfig(window_size=4))
    with pytest.raises(ConfigError, match="algorithm"):
        from_dict(TrainConfig, {"algorithm": "dpo"})


@pytest.mark.parametrize("algorithm", ["flow-grpo", "mix-grpo", "naive-elbo"])
def test_one_iteration_of_each_baseline_trains_only_the_lora(tiny_model, tiny_config, algorithm):
    config = tiny_config(
        algorithm=algorithm,
        rollout=RolloutConfig(prompts_per_iteration=2, group_size=4, steps=4, solver="euler", batch_size=16),
        flow_grpo=FlowGRPOConfig(gradient_steps=2, beta=0.04),
        mix_grpo=MixGRPOConfig(window_size=2, window_interval=1),
    )
    adapter = load_adapter(tiny_model, "cpu")
    trainer = make_trainer(adapter, RewardMix(builtin_rewards(), config.rewards), config)
    base_before = {k: v.clone() for k, v in adapter.denoiser.named_parameters() if "lora_" not in k}
    lora_before = {k: v.clone() for k, v in adapter.denoiser.named_parameters() if "lora_" in k}
    first = trainer.step()
    for key in ("reward_mean", "loss", "ratio_mean", "clip_fraction", "kl", "grad_norm", "images_per_s"):
        assert np.isfinite(first[key]), key
    after = dict(adapter.denoiser.named_parameters())
    assert all(torch.equal(after[k], v) for k, v in base_before.items())
    assert any(not torch.equal(after[k], v) for k, v in lora_before.items())
    if algorithm == "mix-grpo":
        assert first["window_start"] == 0 and first["trained_steps"] == 2
        assert trainer.step()["window_start"] == 1  # window_interval=1: it moved
    if algorithm == "flow-grpo":
        assert first["trained_steps"] == 4


def test_a_budgeted_mixgrpo_run_moves_its_window_by_the_time_spent(tiny_model, tiny_config):
    config = tiny_config(
        algorithm="mix-grpo",
        iterations=10**6,  # as the benchmarks run: the time budget stops it
        rollout=RolloutConfig(prompts_per_iteration=2, group_size=4, steps=4, solver="euler", batch_size=16),
        mix_grpo=MixGRPOConfig(window_size=2, window_interval=0, window_last_start=1.0),
    )
    trainer = make_trainer(load_adapter(tiny_model, "cpu"), RewardMix(builtin_rewards(), config.rewards), config)
    assert trainer.step(elapsed_fraction=0.0)["window_start"] == 0
    assert trainer.step(elapsed_fraction=0.5)["window_start"] == 1
    assert trainer.step(elapsed_fraction=0.9)["window_start"] == 2  # the last start of 4 steps, window 2


def test_recomputed_step_log_probs_equal_the_rollouts_at_theta_old(tiny_model, tiny_config):
    """The stored log-probs are those of the policy that sampled: at theta = theta_old every ratio is 1."""
    config = tiny_config(
        algorithm="flow-grpo",
        rollout=RolloutConfig(prompts_per_iteration=2, group_size=4, steps=4, solver="euler", batch_size=16),
        flow_grpo=FlowGRPOConfig(gradient_steps=1, beta=0.0),
    )
    adapter = load_adapter(tiny_model, "cpu")
    trainer = make_trainer(adapter, RewardMix(builtin_rewards(), config.rewards), config)
    with torch.no_grad():  # a trained LoRA: rollouts fold it into the weights, the recomputation below does not
        for param in adapter.lora_parameters():
            param.normal_(std=0.05)
    generation, trajectory = trainer.generate(["a red circle", "two blue squares"])
    assert trajectory.states.shape == (5, 8, *adapter.latent_shape)
    assert torch.equal(trajectory.states[-1].to(generation.latents.dtype), generation.latents)
    with torch.no_grad():
        for step in range(4):
            z = trajectory.states[step]
            mean, std = trainer.step_mean_std(z, trainer._velocity(z, step, generation.embeddings), step)
            recomputed = gaussian_log_prob(trajectory.states[step + 1], mean, std)
            assert torch.allclose(recomputed, trajectory.log_probs_old[step], atol=1e-4)


def test_naive_elbo_turns_every_variance_reduction_off(tiny_config):
    from trainer_core.trainer import algorithm_vgrpo_config

    naive = algorithm_vgrpo_config(tiny_config(algorithm="naive-elbo"))
    assert (naive.pair_sharing, naive.stratified, naive.parameterisation, naive.adaptive_weighting) == (
        "none",
        False,
        "v",
        False,
    )
    assert algorithm_vgrpo_config(tiny_config()).pair_sharing == "group"


def test_minibatches_split_each_pass_into_disjoint_steps_and_later_steps_move_the_ratios(tiny_model, tiny_config):
    from trainer_core.config import OptimizerConfig

    config = tiny_config(
        algorithm="flow-grpo",
        flow_grpo=FlowGRPOConfig(gradient_steps=2, minibatches=2, beta=0.04),
        optimizer=OptimizerConfig(learning_rate=1e-2),
    )
    trainer = make_trainer(load_adapter(tiny_model, "cpu"), RewardMix(builtin_rewards(), config.rewards), config)
    rows_seen, stats_seen = [], []
    minibatch, gradient_step = trainer._minibatch, trainer.gradient_step

    def spy_minibatch(batch):
        rows, size = minibatch(batch)
        rows_seen.append(rows.tolist())
        assert size == 4
        return rows, size

    def spy_step(batch):
        stats_seen.append(gradient_step(batch))
        return stats_seen[-1]

    trainer._minibatch, trainer.gradient_step = spy_minibatch, spy_step
    metrics = trainer.step()
    assert len(rows_seen) == 4  # 2 passes x 2 minibatches, one optimiser step each
    for first, second in (rows_seen[:2], rows_seen[2:]):
        assert len(first) == len(second) == 4 and sorted(first + second) == list(range(8))
    assert rows_seen[0] != rows_seen[2]  # a new split at each pass
    assert stats_seen[0]["ratio_abs_dev"] < 1e-5  # the first step is at theta_old
    assert min(s["ratio_abs_dev"] for s in stats_seen[1:]) > 10 * max(stats_seen[0]["ratio_abs_dev"], 1e-7)
    assert metrics["ratio_abs_dev"] == pytest.approx(np.mean([s["ratio_abs_dev"] for s in stats_seen]))
