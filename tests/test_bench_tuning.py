"""`vgrpo bench tune`: one grid rule for every method, the choice, the YAML it leaves, and resuming."""

import json

import pytest

from studio.bench.speed import method_configs
from studio.bench.tuning import TUNING_KNOBS, tune, tuning_grid, with_overrides, write_tuning_report
from studio.cli import main
from trainer_core.config import ConfigError, TrainConfig, load_config, load_preset


def test_every_method_gets_the_same_kind_of_grid():
    for method, knobs in TUNING_KNOBS.items():
        assert len(knobs) == 2 and all(len(values) == 2 for values in knobs.values()), method
    preset = load_preset("shapes-geneval-flow-grpo")
    grid = tuning_grid(preset, TUNING_KNOBS["flow-grpo"])
    assert len(grid) == 12
    rates = sorted({probe["optimizer.learning_rate"] for probe in grid})
    preset_rate = preset.optimizer.learning_rate
    assert rates == pytest.approx([preset_rate / 2, preset_rate, 2 * preset_rate])
    assert {(p["flow_grpo.clip_epsilon"], p["flow_grpo.beta"]) for p in grid} == {
        (1e-4, 0.0),
        (1e-4, 0.04),
        (1e-3, 0.0),
        (1e-3, 0.04),
    }
    tuned = with_overrides(preset, grid[-1])
    assert (tuned.optimizer.learning_rate, tuned.flow_grpo.clip_epsilon, tuned.flow_grpo.beta) == (
        2 * preset_rate,
        1e-3,
        0.04,
    )
    with pytest.raises(ConfigError, match=r"flow_grpo\.minibatches"):
        with_overrides(preset, {"flow_grpo.minibatches": 0})


def test_tuning_picks_the_most_accurate_probe_writes_its_config_and_resumes(tiny_model, tmp_path):
    configs = method_configs(["vgrpo", "diffusion-nft"], tiny_model, "cpu")
    knobs = {"vgrpo": {"vgrpo.n_mc": (2,)}, "diffusion-nft": {"nft.timesteps": (2,)}}
    saved: list[list[dict]] = []
    report = tune(
        configs,
        budget_minutes=1e-4,  # one iteration per probe
        seeds=[0],
        lr_schedule="constant",
        eval_per_category=1,
        eval_seeds=1,
        knobs=knobs,
        lr_factors=(1.0, 2.0),
        on_progress=lambda probes: saved.append(probes),
        log=lambda _: None,
    )
    for method in ("vgrpo", "diffusion-nft"):
        result = report["methods"][method]
        assert [p["iterations"] for p in result["probes"]] == [1, 1]
        accuracies = [p["accuracy_mean"] for p in result["probes"]]
        assert all(0 <= a <= 1 for a in accuracies)
        best = result["probes"][result["best"]]
        assert best["accuracy_mean"] == max(accuracies) and result["best"] == accuracies.index(max(accuracies))
        assert result["config"]["optimizer"]["learning_rate"] == pytest.approx(best["optimizer.learning_rate"])
        assert result["config"]["optimizer"]["lr_schedule"] == "constant"
        for key in ("kl", "grad_norm", "reward_mean"):
            assert key in best
    assert len(saved) == 4 and len(saved[-1]) == 4  # every probe and seed saved as it finishes
    markdown = write_tuning_report(report, tmp_path)
    assert "## vgrpo" in markdown and "## diffusion-nft" in markdown and "**" in markdown
    written = load_config(tmp_path / "diffusion-nft.yaml")
    assert isinstance(written, TrainConfig) and written.algorithm == "diffusion-nft" and written.nft.timesteps == 2
    # a resumed run trains nothing it has and reports the same
    again = tune(
        configs,
        1e-4,
        [0],
        "constant",
        1,
        1,
        knobs=knobs,
        lr_factors=(1.0, 2.0),
        finished=saved[-1],
        on_progress=lambda _: pytest.fail("trained a probe it already had"),
        log=lambda _: None,
    )
    assert again["methods"] == report["methods"]


def test_the_cli_refuses_bad_settings_and_a_progress_file_from_other_ones(tmp_path, capsys):
    out = tmp_path / "tune"
    assert main(["bench", "tune", "--budget-minutes", "1", "--lr-schedule", "step", "--out", str(out)]) == 2
    assert "--lr-schedule: must be one of constant, linear, cosine" in capsys.readouterr().err
    assert main(["bench", "tune", "--budget-minutes", "1", "--methods", "dpo", "--out", str(out)]) == 2
    assert "--methods: no tuning grid for 'dpo'" in capsys.readouterr().err
    out.mkdir()
    (out / "tuning.progress.json").write_text(json.dumps({"settings": {"budget_minutes": 9}, "probes": []}))
    assert main(["bench", "tune", "--budget-minutes", "1", "--methods", "vgrpo", "--out", str(out)]) == 2
    assert "from a run with other settings" in capsys.readouterr().err
    assert (out / "tuning.progress.json").exists()
