"""The service facade the web UI uses."""

import numpy as np
import pytest

from storage.data_dir import DataDir
from studio.api import ConfigError, Studio
from trainer_core.shapes.grammar import parse_prompt
from trainer_core.shapes.pipeline import build_shapes_pipeline


@pytest.fixture
def studio(tmp_path):
    return Studio(DataDir(tmp_path / "home"))


def test_prompt_sets_hold_grammar_prompts(studio):
    for name in studio.prompt_sets():
        prompts = studio.prompt_set(name)
        assert prompts and all(parse_prompt(p) for p in prompts)
    assert all(parse_prompt(p).category == "position" for p in studio.prompt_set("heldout: position"))
    with pytest.raises(ValueError, match="prompt set"):
        studio.prompt_set("heldout: nothing")


def test_models_list_builtins_and_local_directories_with_their_family(studio, tiny_shapes, tmp_path):
    build_shapes_pipeline(tiny_shapes).save_pretrained(studio.data_dir.models / "mine")
    (studio.data_dir.models / "not-a-model").mkdir()
    other = studio.data_dir.models / "cascade"
    other.mkdir()
    (other / "model_index.json").write_text('{"_class_name": "StableCascadePriorPipeline"}')
    assert studio.models() == [
        ("shapes-base · Built-in shapes model (32 px, pixel space)", "shapes-base"),
        ("cascade · not supported (StableCascadePriorPipeline)", "cascade"),
        ("mine · Built-in shapes model (32 px, pixel space)", "mine"),
    ]
    # a name in models/ is a model anywhere a config names one
    config = studio.config_for_model(studio.preset_config(), "mine")
    assert studio.validate(config)["model"]["name"] == "mine"
    assert config["rollout"]["steps"] == 8 and config["lora"]["target_modules"][:2] == ["to_q", "to_k"]
    with pytest.raises(ConfigError, match=r"model\.name: .*supported pipelines: .*StableDiffusionXLPipeline"):
        studio.validate(studio.config_for_model(studio.preset_config(), "mine") | {"model": {"name": "cascade"}})
    with pytest.raises(ConfigError, match=r"model\.name: 'nowhere' is not a built-in model"):
        studio.config_for_model(studio.preset_config(), "nowhere")


def test_help_text_and_validation_name_fields(studio):
    help_text = studio.field_help()
    assert "paper" in help_text["optimizer.learning_rate"] and "clip" in help_text["vgrpo.clip_epsilon"]
    config = studio.preset_config()
    config["optimizer"]["learning_rate"] = "abc"
    with pytest.raises(ConfigError, match=r"optimizer\.learning_rate"):
        studio.validate(config)
    round_trip = studio.config_from_yaml(studio.config_to_yaml(studio.preset_config()))
    assert round_trip == studio.preset_config()
    with pytest.raises(ValueError, match="checkpoint"):
        studio.export("base", "kohya")


def test_reward_curves_are_the_mix_and_its_mean_not_timings(studio):
    config = studio.preset_config()
    config["rewards"]["weights"] = {"geneval": 1.0, "partial": 0.5}
    job_id = studio.submit(config)
    _, token = studio.jobs.claim("host")
    metrics = {"iteration": 1, "reward_mean": 0.6, "reward_geneval": 0.5, "reward_partial": 0.2, "reward_std": 0.1}
    assert studio.jobs.record_iteration(job_id, token, {**metrics, "reward_s": 0.03, "loss": 0.1})
    names = studio.reward_series(job_id)
    assert names == ["reward_mean", "reward_geneval", "reward_partial"]
    assert set(names) <= set(studio.job_metrics(job_id))


def test_a_duplicated_job_trains_on_the_latest_version_of_its_preference_reward(studio):
    from trainer_core.preference.artifact import PreferenceCard, save_preference_model
    from trainer_core.preference.bradley_terry import LinearPreferenceModel

    def publish(version_dir, version):
        model = LinearPreferenceModel(*(np.ones(35) for _ in range(3)))
        card = PreferenceCard(
            "mine", version, "shapes-stats", 10, {"a": 10}, 0.8, 0.1, 5, "l1=0.1", "", "", [], 0.1, ""
        )
        save_preference_model(version_dir, model, card)

    store = studio.jobs.catalog.store
    store.publish("mine", publish)
    config = studio.preset_config()
    config["rewards"]["weights"] = {"geneval": 1.0, "pref:mine": 0.5}
    job = studio.job_config(studio.submit(config))
    assert "pref:mine@v1" in job["rewards"]["weights"]
    same, note = studio.latest_preference_versions(job)
    assert same["rewards"]["weights"] == {"geneval": 1.0, "pref:mine": 0.5} and note == ""
    store.publish("mine", publish)
    newer, note = studio.latest_preference_versions(job)
    assert newer["rewards"]["weights"]["pref:mine"] == 0.5 and note == "pref:mine will train on v2 (the job used v1)"
    assert studio.rewards()[-1] == "pref:mine" and "pref:mine" not in studio.builtin_rewards()
