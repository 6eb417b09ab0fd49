"""`vgrpo bench ablation` and `vgrpo bench throughput` on the tiny model."""

import pytest

from studio.bench.ablation import VARIANTS, ablation_benchmark, variant_config
from studio.bench.throughput import throughput_benchmark
from trainer_core.config import load_preset


def test_each_variant_changes_only_its_vgrpo_fields():
    base = load_preset("shapes-geneval")
    for variant, changes in VARIANTS.items():
        config = variant_config(base, variant, iterations=7)
        assert config.iterations == 7
        differing = {f for f in changes if getattr(config.vgrpo, f) != getattr(base.vgrpo, f)}
        assert differing == {f for f in changes if changes[f] != getattr(base.vgrpo, f)}, variant
        assert (config.rollout, config.optimizer, config.lora) == (base.rollout, base.optimizer, base.lora)
    with pytest.raises(ValueError, match="--variants"):
        variant_config(base, "no such thing", 1)


@pytest.mark.slow
def test_ablation_reports_accuracy_and_surrogate_cv(tiny_config):
    report = ablation_benchmark(
        ["default", "no pair sharing"],
        iterations=2,
        eval_per_category=1,
        eval_seeds=1,
        base=tiny_config(),
        log=lambda line: None,
    )
    rows = {r["variant"]: r for r in report["results"]}
    assert set(rows) == {"default", "no pair sharing"}
    for row in rows.values():
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["surrogate_cv_within_group"] > 0


def test_throughput_splits_an_iteration(tiny_config):
    report = throughput_benchmark(tiny_config(), iterations=1)
    mean = report["mean"]
    parts = mean["rollout_s"] + mean["reward_s"] + mean["old_pass_s"] + mean["train_s"] + mean["logging_s"]
    assert parts == pytest.approx(mean["total_s"], rel=0.05)
    assert 0 < mean["model_s"] < mean["total_s"]
    assert mean["backward_s"] > 0 and mean["forward_s"] > 0
    assert 0 < mean["outside_model_share"] < 1
    assert mean["images_per_s"] == pytest.approx(8 / mean["total_s"], rel=1e-3)
    assert report["peak_memory_mb"] > 10
