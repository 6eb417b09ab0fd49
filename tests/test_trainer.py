"""The V-GRPO loop on a tiny randomly initialised shapes model."""

import json

import numpy as np
import pytest
import torch

from studio.runs import RunDirectory
from studio.training import run_training
from trainer_core.adapters import load_adapter
from trainer_core.algorithms import make_trainer
from trainer_core.config import ConfigError, FlowGRPOConfig, LoggingConfig, OptimizerConfig, RolloutConfig
from trainer_core.lora import read_lora
from trainer_core.prompt_source import PromptSource
from trainer_core.rewards.base import Reward, RewardMix, RewardMixConfig
from trainer_core.rewards.builtin import builtin_rewards
from trainer_core.shapes.grammar import CATEGORIES, parse_prompt
from trainer_core.trainer import VGRPOTrainer
from trainer_core.vgrpo import VGRPOConfig


def test_one_iteration_changes_lora_weights_and_nothing_else(tiny_model, tiny_config):
    config = tiny_config()
    adapter = load_adapter(tiny_model, "cpu")
    trainer = VGRPOTrainer(adapter, RewardMix(builtin_rewards(), config.rewards), config)
    base_before = {k: v.clone() for k, v in adapter.denoiser.named_parameters() if "lora_" not in k}
    lora_before = {k: v.clone() for k, v in adapter.denoiser.named_parameters() if "lora_" in k}
    metrics = trainer.step()
    assert metrics["iteration"] == 1
    for key in (
        "reward_mean",
        "reward_std",
        "loss",
        "ratio_mean",
        "clip_fraction",
        "kl",
        "grad_norm",
        "surrogate_cv_within_group",
        "images_per_s",
        "reward_jpeg_incompressibility",
    ):
        assert np.isfinite(metrics[key]), key
    # The first gradient step starts at theta_old: every ratio is 1.
    assert metrics["ratio_mean"] == pytest.approx(1.0, abs=0.05)
    after = dict(adapter.denoiser.named_parameters())
    assert all(torch.equal(after[k], v) for k, v in base_before.items())
    assert any(not torch.equal(after[k], v) for k, v in lora_before.items())


def test_run_directory_and_resume_without_gaps(tiny_model, tiny_config, tmp_path):
    logging = LoggingConfig(sample_every=2, checkpoint_every=1, sample_prompts=("a red circle",), sample_seeds=2)
    config = tiny_config(iterations=3, logging=logging)
    out = tmp_path / "run"
    result = run_training(config, out)
    assert result.iterations_done == 3 and not result.interrupted
    run = RunDirectory(out)
    rows = run.read_metrics()
    assert [r["iteration"] for r in rows] == [1, 2, 3]
    assert all(rows[i]["wall_time_s"] < rows[i + 1]["wall_time_s"] for i in range(2))
    assert (out / "checkpoints" / "final.safetensors").is_file()
    # every second iteration, and always the last one
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == [f"iter_{i:06d}.png" for i in (2, 3)]

    # Continue the same run to 5 iterations after pretending iteration 3's checkpoint was never written.
    for path in run.checkpoint_paths(3):
        path.unlink()
    continued = run_training(tiny_config(iterations=5, logging=logging), out, resume=True)
    assert continued.iterations_done == 5
    assert [r["iteration"] for r in run.read_metrics()] == [1, 2, 3, 4, 5]
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == [f"iter_{i:06d}.png" for i in (2, 3, 4, 5)]


@pytest.mark.parametrize("prompts", ["train", "train-balanced", "train-adaptive", "train-counterfactual"])
def test_resumed_run_matches_an_uninterrupted_one(tiny_model, tiny_config, tmp_path, prompts):
    # 3 prompts per iteration: the balanced deck of 5 categories is mid-way at the split
    rollout = RolloutConfig(prompts_per_iteration=3, group_size=2, steps=3, solver="euler", prompts=prompts)
    straight = tmp_path / "straight"
    run_training(tiny_config(iterations=3, rollout=rollout), straight)
    split = tmp_path / "split"
    run_training(tiny_config(iterations=2, rollout=rollout), split)
    run_training(tiny_config(iterations=3, rollout=rollout), split, resume=True)
    a, b = RunDirectory(straight).read_metrics(), RunDirectory(split).read_metrics()
    for key in ("reward_mean", "loss", "grad_norm"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], rel=1e-4), key


def test_the_scheduled_learning_rate_reaches_the_optimizer(tiny_model, tiny_config):
    config = tiny_config(iterations=3, optimizer=OptimizerConfig(learning_rate=1e-3, lr_schedule="linear"))
    adapter = load_adapter(tiny_model, "cpu")
    trainer = VGRPOTrainer(adapter, RewardMix(builtin_rewards(), config.rewards), config)
    rates = []
    for _ in range(3):
        rates.append(trainer.step()["learning_rate"])
        assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(rates[-1])
    assert rates == pytest.approx([1e-3, 5.5e-4, 1e-4])


def test_a_time_budget_ends_the_run_and_its_learning_rate_decay(tiny_model, tiny_config, tmp_path):
    ticks = iter(range(0, 10_000, 10))  # every reading of the clock is 10 s after the last

    def clock() -> float:
        return float(next(ticks))

    optimizer = OptimizerConfig(learning_rate=1e-3, lr_schedule="cosine", final_lr_fraction=0.1)
    config = tiny_config(iterations=100, time_budget_minutes=1.0, optimizer=optimizer)
    out = tmp_path / "run"
    result = run_training(config, out, clock=clock)
    # iterations start at 10, 30, 50 s and take 10 s each; a fourth would end at 80 s, past 60 s
    assert result.iterations_done == 3 and not result.interrupted
    rows = RunDirectory(out).read_metrics()
    assert [r["wall_time_s"] for r in rows] == [20.0, 40.0, 60.0]
    # the schedule follows the budget, far ahead of 3 of 100 iterations
    expected = [optimizer.lr_factor(i, 100, elapsed / 60) for i, elapsed in enumerate((10, 30, 50))]
    assert [r["learning_rate"] for r in rows] == pytest.approx([1e-3 * f for f in expected])
    assert expected[2] < 0.2
    assert (out / "samples" / "iter_000003.png").is_file()  # the last iteration's grid
    assert read_lora(out / "checkpoints" / "final.safetensors")[2]["iterations"] == "3"
    # a run that ended on its budget resumes to nothing more
    again = run_training(config, out, resume=True, clock=clock)
    assert again.iterations_done == 3 and len(RunDirectory(out).read_metrics()) == 3


def test_lr_schedule_follows_time_or_iterations_whichever_is_further():
    cosine = OptimizerConfig(lr_schedule="cosine", final_lr_fraction=0.1)
    assert cosine.lr_factor(0, 11) == 1.0 and cosine.lr_factor(10, 11) == pytest.approx(0.1)
    assert cosine.lr_factor(0, 11, elapsed_fraction=1.0) == pytest.approx(0.1)
    assert cosine.lr_factor(5, 11, elapsed_fraction=0.2) == pytest.approx(0.55)  # iterations ahead of time
    assert cosine.lr_factor(2, 11, elapsed_fraction=0.5) == pytest.approx(0.55)  # time ahead of iterations
    assert cosine.lr_factor(0, 11, elapsed_fraction=3.0) == pytest.approx(0.1)  # past the budget: the end
    assert OptimizerConfig().lr_factor(0, 11, elapsed_fraction=0.9) == 1.0  # constant stays constant


def test_existing_run_is_not_overwritten(tiny_model, tiny_config, tmp_path):
    out = tmp_path / "run"
    run_training(tiny_config(iterations=1), out)
    before = (out / "metrics.jsonl").read_text()
    with pytest.raises(FileExistsError, match="--out"):
        run_training(tiny_config(iterations=1), out)
    assert (out / "metrics.jsonl").read_text() == before
    assert json.loads(before.splitlines()[0])["iteration"] == 1


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tiny_model, tiny_config, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from trainer_core.config import dump_config

    config_path = tmp_path / "config.yaml"
    config_path.write_text(dump_config(tiny_config(iterations=500)))
    out = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "studio.cli", "train", "--config", str(config_path), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = RunDirectory(out)
    deadline = time.monotonic() + 300
    while len(run.read_metrics()) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-2000:]
    assert "resume with" in stdout
    done = len(run.read_metrics())
    assert 2 <= done < 500
    assert run.latest_checkpoint() == done
    assert not (out / "checkpoints" / "final.safetensors").exists()


@pytest.mark.parametrize("anchor", ["old", "reference"])
def test_penalty_anchor_and_its_cost(tiny_model, tiny_config, anchor):
    """The reference anchor is the base model: zero penalty while the LoRA is still zero, a positive one
    once it has moved; the old anchor restarts at theta_old every iteration. The reference costs n_mc NFE."""
    config = tiny_config(vgrpo=VGRPOConfig(n_mc=2, gradient_steps=1, beta=1.0, penalty_to=anchor))
    adapter = load_adapter(tiny_model, "cpu")
    trainer = VGRPOTrainer(adapter, RewardMix(builtin_rewards(), config.rewards), config)
    first, second = trainer.step(), trainer.step()
    assert first["kl"] == pytest.approx(0.0, abs=1e-12)  # LoRA B starts at zero: theta_old = reference
    if anchor == "reference":
        assert second["kl"] > 0
    else:
        assert second["kl"] == pytest.approx(0.0, abs=1e-12)  # one step per iteration: theta = theta_old
    images = 2 * 4
    expected = images * (3 + 3 * 2 + (2 if anchor == "reference" else 0))  # euler 3 + fwd/bwd (s_old from it)
    assert first["nfe"] == expected


@pytest.mark.parametrize(("beta", "anchor"), [(0.0, "old"), (1.0, "old"), (1.0, "reference")])
def test_the_first_step_as_old_pass_changes_nothing_but_the_cost(tiny_model, tiny_config, beta, anchor):
    """s_old from the first gradient step's forward equals a separate pass at theta_old: same LoRA after
    two iterations, same surrogates, N_MC fewer forward passes per image."""
    runs = {}
    for reuse in (False, True):
        vgrpo = VGRPOConfig(n_mc=2, gradient_steps=2, beta=beta, penalty_to=anchor, reuse_first_step=reuse)
        config = tiny_config(vgrpo=vgrpo)
        adapter = load_adapter(tiny_model, "cpu")
        trainer = VGRPOTrainer(adapter, RewardMix(builtin_rewards(), config.rewards), config)
        metrics = [trainer.step(), trainer.step()]
        lora = {k: v.detach().clone() for k, v in adapter.denoiser.named_parameters() if "lora_" in k}
        runs[reuse] = metrics, lora
    (separate, lora_separate), (reused, lora_reused) = runs[False], runs[True]
    for key in ("surrogate_mean", "loss", "ratio_mean", "kl", "reward_mean"):
        assert reused[1][key] == pytest.approx(separate[1][key], rel=1e-4, abs=1e-7), key
    assert all(torch.allclose(lora_reused[k], lora_separate[k], atol=1e-6) for k in lora_separate)
    assert any(bool(v.abs().max() > 0) for k, v in lora_reused.items() if "lora_B" in k)  # the LoRA did move
    images = 2 * 4
    assert separate[0]["nfe"] - reused[0]["nfe"] == images * 2


def test_balanced_prompts_cover_every_category_once_per_deck():
    source = PromptSource("train-balanced", seed=3)
    prompts = source.draw(7) + source.draw(13)  # decks straddle the draws
    categories = [parse_prompt(p).category for p in prompts]
    for start in range(0, 20, len(CATEGORIES)):
        assert sorted(categories[start : start + len(CATEGORIES)]) == sorted(CATEGORIES)
    assert len(set(prompts)) > 10  # prompts within a category still vary


def test_adaptive_prompts_go_to_the_categories_whose_groups_disagree():
    source = PromptSource("train-adaptive", seed=5)
    assert source.category_probabilities() == pytest.approx([1 / len(CATEGORIES)] * len(CATEGORIES))
    # "single" groups always tie, "position" groups spread three times as much as the rest
    spread_of = {
        category: 0.0 if category == "single" else 0.3 if category == "position" else 0.1 for category in CATEGORIES
    }
    for _ in range(60):
        prompts = source.draw(10)
        assert [parse_prompt(p).category for p in prompts] == source.drawn_categories
        source.observe(np.array([spread_of[c] for c in source.drawn_categories]))
    probability = dict(zip(CATEGORIES, source.category_probabilities(), strict=True))
    assert source.diagnostics() == {f"prompt_share_{c}": p for c, p in probability.items()}
    uniform_floor = PromptSource.ADAPTIVE_UNIFORM / len(CATEGORIES)
    by_spread = 1 - PromptSource.ADAPTIVE_UNIFORM  # the rest, shared in proportion to spread (sum 0.6)
    assert probability["single"] == pytest.approx(uniform_floor, abs=1e-3)  # kept, at the floor only
    assert probability["position"] == pytest.approx(uniform_floor + by_spread * 0.3 / 0.6, abs=0.01)
    assert probability["colors"] == pytest.approx(uniform_floor + by_spread * 0.1 / 0.6, abs=0.01)
    drawn = [parse_prompt(p).category for p in source.draw(2000)]
    assert drawn.count("position") / 2000 == pytest.approx(probability["position"], abs=0.03)
    assert drawn.count("single") / 2000 == pytest.approx(uniform_floor, abs=0.015)


def test_counterfactual_prompts_come_in_pairs_of_one_category():
    source = PromptSource("train-counterfactual", seed=2)
    prompts = source.draw(8) + source.draw(5)  # an odd draw ends with a prompt whose twin is not drawn
    assert len(prompts) == 13
    pairs = [(parse_prompt(a), parse_prompt(b)) for a, b in zip(prompts[0:8:2], prompts[1:8:2], strict=True)]
    assert all(a.category == b.category and a != b for a, b in pairs)
    assert len({a.category for a, _ in pairs} | {parse_prompt(p).category for p in prompts[8::2]}) > 1


def test_unknown_prompt_source_names_the_field_and_choices(tmp_path):
    with pytest.raises(ValueError, match=r"rollout\.prompts: .*train-balanced"):
        PromptSource(str(tmp_path / "missing.txt"), seed=0)


class _SpreadByPrompt(Reward):
    """Circles score the image's mean brightness (it varies within a group); every other prompt ties at 0."""

    name = "circles_vary"

    def score(self, images: np.ndarray, prompts: list[str]) -> np.ndarray:
        brightness = images.reshape(len(images), -1).mean(axis=1) / 255
        return np.array([b if "circle" in p else 0.0 for b, p in zip(brightness, prompts, strict=True)])


@pytest.mark.parametrize("algorithm", ["vgrpo", "flow-grpo"])
def test_candidate_prompts_train_only_the_groups_whose_rewards_differ(tiny_model, tiny_config, tmp_path, algorithm):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\ntwo green triangles\n")
    rollout = RolloutConfig(
        prompts_per_iteration=2, candidate_prompts=6, group_size=4, steps=3, solver="euler", prompts=str(prompts)
    )
    config = tiny_config(algorithm=algorithm, rollout=rollout, flow_grpo=FlowGRPOConfig(beta=0.0))
    adapter = load_adapter(tiny_model, "cpu")
    mix = RewardMix({"circles_vary": _SpreadByPrompt()}, RewardMixConfig({"circles_vary": 1.0}))
    trainer = make_trainer(adapter, mix, config)
    rolled_out, trained = [], []
    generate, old_pass = trainer.generate, trainer.old_pass
    trainer.generate = lambda p: rolled_out.append(p) or generate(p)  # type: ignore[method-assign]
    trainer.old_pass = lambda g, tr: trained.append((g, tr)) or old_pass(g, tr)  # type: ignore[method-assign]
    for _ in range(3):
        metrics = trainer.step()
        drawn = rolled_out[-1]
        generation, trace = trained[-1]
        circles = [i for i, p in enumerate(drawn) if "circle" in p]
        assert len(drawn) == 6 and len(generation.prompts) == 2 * 4
        if len(circles) >= 2:
            assert all("circle" in p for p in generation.prompts)
        else:  # the circles, then the earliest tied groups, in rollout order
            tied = [i for i in range(6) if i not in circles]
            assert generation.prompts[::4] == [drawn[i] for i in sorted(circles + tied[: 2 - len(circles)])]
        assert metrics["tied_groups"] == pytest.approx((6 - len(circles)) / 6)
        assert generation.latents.shape[0] == generation.images.shape[0] == len(generation.embeddings) == 8
        if algorithm == "flow-grpo":
            assert trace.states.shape[1] == 8
            assert torch.equal(trace.states[-1].to(generation.latents.dtype), generation.latents)
    # rollout NFE counts all 24 images, training NFE only the 8 kept
    per_image_training = 3 * 2 * 2 if algorithm == "vgrpo" else 3 * 1 * 3
    assert metrics["nfe"] == 24 * 3 + 8 * per_image_training
    assert metrics["images_per_s"] == pytest.approx(24 / metrics["iteration_s"])


@pytest.mark.parametrize("algorithm", ["vgrpo", "flow-grpo"])
def test_dropped_tied_groups_skip_the_old_pass_and_the_gradient_steps(tiny_model, tiny_config, tmp_path, algorithm):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\ntwo green triangles\n")
    rollout = RolloutConfig(
        prompts_per_iteration=4, group_size=2, steps=3, solver="euler", prompts=str(prompts), drop_tied_groups=True
    )
    config = tiny_config(algorithm=algorithm, rollout=rollout, flow_grpo=FlowGRPOConfig(beta=0.0))
    mix = RewardMix({"circles_vary": _SpreadByPrompt()}, RewardMixConfig({"circles_vary": 1.0}))
    trainer = make_trainer(load_adapter(tiny_model, "cpu"), mix, config)
    rolled_out, trained = [], []
    generate, old_pass = trainer.generate, trainer.old_pass
    trainer.generate = lambda p: rolled_out.append(p) or generate(p)  # type: ignore[method-assign]
    trainer.old_pass = lambda g, tr: trained.append(g) or old_pass(g, tr)  # type: ignore[method-assign]
    for _ in range(4):
        metrics = trainer.step()
        circles = [p for p in rolled_out[-1] if "circle" in p]
        expected = circles or rolled_out[-1]  # all tied: every group trains
        assert trained[-1].prompts == [p for p in expected for _ in range(2)]
        assert metrics["trained_groups"] == len(expected)
        assert metrics["tied_groups"] == pytest.approx(1 - len(circles) / 4)
        per_image_training = 3 * 2 * 2 if algorithm == "vgrpo" else 3 * 1 * 3
        assert metrics["nfe"] == 8 * 3 + 2 * len(expected) * per_image_training


def test_training_images_are_whole_groups_of_the_largest_spread_in_rollout_order(tiny_model, tiny_config):
    config = tiny_config(rollout=RolloutConfig(prompts_per_iteration=2, candidate_prompts=6, group_size=4, steps=3))
    trainer = VGRPOTrainer(load_adapter(tiny_model, "cpu"), RewardMix(builtin_rewards(), config.rewards), config)
    assert trainer.training_images(np.array([0.0, 0.5, 0.0, 0.2, 0.5, 0.0])).tolist() == [4, 5, 6, 7, 16, 17, 18, 19]
    # ties go to the earlier group
    assert trainer.training_images(np.array([0.0, 0.0, 0.1, 0.0, 0.0, 0.0])).tolist() == [0, 1, 2, 3, 8, 9, 10, 11]


def test_dropping_tied_groups_keeps_the_groups_whose_rewards_differ(tiny_model, tiny_config):
    def trainer_for(**rollout) -> VGRPOTrainer:
        config = tiny_config(rollout=RolloutConfig(prompts_per_iteration=4, group_size=2, steps=3, **rollout))
        return VGRPOTrainer(load_adapter(tiny_model, "cpu"), RewardMix(builtin_rewards(), config.rewards), config)

    dropping = trainer_for(drop_tied_groups=True)
    assert dropping.training_images(np.array([0.0, 0.3, 0.0, 0.1])).tolist() == [2, 3, 6, 7]
    assert dropping.training_images(np.array([0.2, 0.3, 0.1, 0.1])) is None  # none tied: all train
    assert dropping.training_images(np.zeros(4)) is None  # all tied: all train rather than none
    assert trainer_for().training_images(np.array([0.0, 0.3, 0.0, 0.1])) is None
    # with candidates: the 4 widest of 6, then of those the ones that do not tie
    candidates = trainer_for(drop_tied_groups=True, candidate_prompts=6)
    assert candidates.training_images(np.array([0.0, 0.3, 0.0, 0.0, 0.1, 0.0])).tolist() == [2, 3, 8, 9]


def _trainer_with_one_prompt(
    tiny_model, tiny_config, tmp_path, algorithm: str, shared_noise: bool, same_noise_in_group: bool = False
):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    rollout = RolloutConfig(
        prompts_per_iteration=3,
        group_size=4,
        steps=3,
        solver="euler",
        prompts=str(prompts),
        shared_noise=shared_noise,
        same_noise_in_group=same_noise_in_group,
    )
    config = tiny_config(algorithm=algorithm, rollout=rollout)
    return make_trainer(load_adapter(tiny_model, "cpu"), RewardMix(builtin_rewards(), config.rewards), config)


@pytest.mark.parametrize("algorithm", ["vgrpo", "flow-grpo"])
def test_shared_noise_gives_image_j_of_every_group_the_same_initial_noise(tiny_model, tiny_config, tmp_path, algorithm):
    def noise(shared_noise: bool) -> torch.Tensor:
        trainer = _trainer_with_one_prompt(tiny_model, tiny_config, tmp_path, algorithm, shared_noise)
        return trainer.expand_prompts(trainer.prompts.draw(3))[2].view(3, 4, -1)

    shared = noise(True)
    assert torch.equal(shared[1], shared[0]) and torch.equal(shared[2], shared[0])
    distances = torch.cdist(shared[0], shared[0])
    assert distances[~torch.eye(4, dtype=torch.bool)].min() > 1.0  # the G noises of a group differ
    independent = noise(False)
    assert torch.cdist(independent[0], independent[1]).min() > 1.0


@pytest.mark.parametrize("shared_noise", [False, True])
def test_same_noise_in_group_starts_a_group_from_one_noise_and_the_sde_parts_them(
    tiny_model, tiny_config, tmp_path, shared_noise
):
    trainer = _trainer_with_one_prompt(tiny_model, tiny_config, tmp_path, "flow-grpo", shared_noise, True)
    noise = trainer.expand_prompts(trainer.prompts.draw(3))[2].view(3, 4, -1)
    assert all(torch.equal(noise[g, j], noise[g, 0]) for g in range(3) for j in range(4))
    across = torch.cdist(noise[:, 0], noise[:, 0])[~torch.eye(3, dtype=torch.bool)]
    assert (across == 0).all() if shared_noise else across.min() > 1.0
    latents = trainer.generate(trainer.prompts.draw(3))[0].latents.view(3, 4, -1)
    assert (latents[0, 1] - latents[0, 0]).abs().amax() > 1e-2  # the SDE steps' noise differs


def test_same_noise_in_group_is_refused_for_ode_rollouts(tiny_config):
    with pytest.raises(ConfigError, match=r"rollout\.same_noise_in_group: only for flow-grpo and mix-grpo"):
        tiny_config(algorithm="vgrpo", rollout=RolloutConfig(same_noise_in_group=True))


def test_shared_noise_ode_rollouts_of_one_prompt_repeat_across_groups(tiny_model, tiny_config, tmp_path):
    trainer = _trainer_with_one_prompt(tiny_model, tiny_config, tmp_path, "vgrpo", shared_noise=True)
    latents = trainer.generate(trainer.prompts.draw(3))[0].latents.view(3, 4, -1)
    torch.testing.assert_close(latents[1], latents[0])
    torch.testing.assert_close(latents[2], latents[0])
    assert (latents[0, 1] - latents[0, 0]).abs().amax() > 1e-3


@pytest.mark.parametrize("algorithm", ["vgrpo", "flow-grpo"])
@pytest.mark.parametrize("selects", [False, True])
def test_the_old_pass_is_queued_before_scoring_unless_rewards_select_the_images(
    tiny_model, tiny_config, algorithm, selects
):
    rollout = RolloutConfig(prompts_per_iteration=2, candidate_prompts=3 if selects else 0, group_size=2, steps=3)
    config = tiny_config(algorithm=algorithm, rollout=rollout)
    trainer = make_trainer(load_adapter(tiny_model, "cpu"), RewardMix(builtin_rewards(), config.rewards), config)
    calls = []
    old_pass, score = trainer.old_pass, trainer.rewards.score
    trainer.old_pass = lambda g, tr: calls.append(("old pass", len(g.prompts))) or old_pass(g, tr)  # type: ignore[method-assign]
    trainer.rewards.score = lambda i, p: calls.append(("score", len(p))) or score(i, p)  # type: ignore[method-assign]
    metrics = trainer.step()
    # the old pass needs no rewards, so a GPU runs it while the host scores; a selection must come first
    assert calls == ([("score", 6), ("old pass", 4)] if selects else [("old pass", 4), ("score", 4)])
    assert trainer.selects_images == selects
    assert np.isfinite(metrics["loss"]) and metrics["trained_groups"] == 2
