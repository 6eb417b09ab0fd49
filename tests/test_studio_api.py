"""The service facade the web UI uses."""

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


def test_models_list_builtins_and_local_directories(studio, tiny_shapes):
    build_shapes_pipeline(tiny_shapes).save_pretrained(studio.data_dir.models / "mine")
    (studio.data_dir.models / "not-a-model").mkdir()
    models = studio.models()
    assert models[0] == "shapes-base"
    assert models[1:] == [str(studio.data_dir.models / "mine")]


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
