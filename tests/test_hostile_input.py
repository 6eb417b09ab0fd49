"""Careless and hostile input: server files out of the web app's reach, pickled weights refused, prompts
files reported by file and line but never quoted."""

import dataclasses

import pytest

from storage.data_dir import DataDir
from studio.api import ConfigError, Studio
from studio.cli import main
from studio.training import run_training
from trainer_core.adapters import load_adapter
from trainer_core.model_zoo import pickled_weights
from trainer_core.shapes.pipeline import build_shapes_pipeline

PASSWD = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"


@pytest.fixture
def studio(tmp_path):
    return Studio(DataDir(tmp_path / "home"))


def with_changes(config: dict, **sections: dict) -> dict:
    return {**config, **{name: {**config.get(name, {}), **values} for name, values in sections.items()}}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rollout": {"prompts": "../../../../etc/passwd"}}, r"rollout\.prompts: '\.\.' is not accepted from the web"),
        ({"rollout": {"prompts": "/etc/passwd"}}, r"rollout\.prompts: absolute paths are not accepted .* prompts/"),
        ({"rollout": {"prompts": "~/.bashrc"}}, r"rollout\.prompts: absolute paths"),
        ({"rollout": {"prompts": "C:\\Windows\\win.ini"}}, r"rollout\.prompts: absolute paths"),
        ({"model": {"name": "/etc"}}, r"model\.name: absolute paths are not accepted .* models/"),
        ({"model": {"name": "sub/../../.."}}, r"model\.name: '\.\.' is not accepted"),
        ({"model": {"safetensors_only": False}}, r"model\.safetensors_only: only the machine's owner"),
        (
            {"rewards": {"weights": {"geneval": 1.0}, "models": {"geneval": {"path": "/root"}}}},
            r"rewards\.models\.geneval\.path: absolute paths",
        ),
        ({"rollout": {"prompts": "missing.txt"}}, r"rollout\.prompts: 'missing.txt' is neither one of train"),
    ],
)
def test_the_web_app_names_no_file_outside_the_data_directory(studio, changes, message):
    config = with_changes(studio.preset_config(), **changes)
    with pytest.raises(ConfigError, match=message) as refused:
        studio.submit(config)
    assert "root:x" not in str(refused.value)
    assert studio.jobs.list_jobs(kind=None) == []  # nothing stored


def test_a_prompts_file_in_the_data_directory_is_named_relative_and_read_there(studio, tiny_config, tmp_path):
    (studio.data_dir.prompts / "mine.txt").write_text("a red circle\n\nthree blue squares\n")
    job_id = studio.submit(with_changes(studio.preset_config(), rollout={"prompts": "mine.txt"}))
    assert studio.job_config(job_id)["rollout"]["prompts"] == "mine.txt"  # stored as named: the directory may move
    assert studio.label_prompts(job_id=job_id)[-2:] == ["a red circle", "three blue squares"]

    # the job reads it from the data directory's prompts/, wherever it runs
    config = tiny_config(iterations=1, rollout=dataclasses.replace(tiny_config().rollout, prompts="mine.txt"))
    result = run_training(config, tmp_path / "run", data_dir=studio.data_dir)
    assert result.iterations_done == 1

    (studio.data_dir.prompts / "bad.txt").write_bytes(b"a red circle\n\xff\xfe")
    with pytest.raises(ConfigError, match=r"^rollout\.prompts: bad\.txt: not UTF-8 text \(byte 0xff at offset 13\)$"):
        studio.submit(with_changes(studio.preset_config(), rollout={"prompts": "bad.txt"}))
    (studio.data_dir.prompts / "free.txt").write_text(PASSWD)
    with pytest.raises(ConfigError, match=r"^rollout\.prompts: free\.txt:1: reward geneval: not a shapes prompt \("):
        studio.submit(with_changes(studio.preset_config(), rollout={"prompts": "free.txt"}))
    assert [job.id for job in studio.list_jobs()] == [job_id]


def test_the_command_line_takes_any_path_but_never_quotes_the_file(tmp_path, capsys):
    """The owner may name any file; a reward that cannot read its lines refuses it by line number alone, and a
    relative path is stored absolute, so that a worker in another directory finds it."""
    home = tmp_path / "home"
    secret = tmp_path / "passwd"
    secret.write_text(PASSWD)
    config = tmp_path / "job.yaml"
    config.write_text(f"rollout: {{prompts: {secret}}}\n")
    assert main(["jobs", "submit", "--data-dir", str(home), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"rollout.prompts: {secret}:1: reward geneval: not a shapes prompt" in err
    assert "root:x" not in err and "daemon" not in err

    config.write_text("rollout: {prompts: passwd}\nrewards: {weights: {jpeg_compressibility: 1.0}}\n")
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.chdir(tmp_path)
    try:
        assert main(["jobs", "submit", "--data-dir", str(home), "--config", str(config)]) == 0
    finally:
        monkeypatch.undo()
    job_id = int(capsys.readouterr().out.strip())
    stored = Studio(DataDir(home)).job_config(job_id)
    assert stored["rollout"]["prompts"] == str(secret)

    config.write_text("model: {name: ~no_such_user_vgrpo/model}\n")  # a home directory nobody has
    assert main(["jobs", "submit", "--data-dir", str(home), "--config", str(config)]) == 2
    assert "model.name: '~no_such_user_vgrpo/model' is not a built-in model" in capsys.readouterr().err


def test_pickled_weights_are_refused_unless_the_owner_allows_them(studio, tiny_shapes):
    pickled = studio.data_dir.models / "pickled"
    build_shapes_pipeline(tiny_shapes, seed=3).save_pretrained(pickled, safe_serialization=False)
    assert list(pickled.glob("unet/*.bin")) and not list(pickled.glob("unet/*.safetensors"))
    config = with_changes(studio.preset_config(), model={"name": "pickled"})
    with pytest.raises(ConfigError, match=r"model\.name: pickled has weights only as pickles.*unet \(diffusion_pyt"):
        studio.submit(config)
    with pytest.raises(OSError, match="safetensors"):
        load_adapter("pickled", "cpu", models_dir=studio.data_dir.models)
    with pickled_weights(True):
        adapter = load_adapter("pickled", "cpu", models_dir=studio.data_dir.models)
    assert adapter.denoiser is not None
    # the owner, through the job service the command line uses, may opt out
    job_id = studio.jobs.submit(with_changes(config, model={"safetensors_only": False}))
    assert studio.job_config(job_id)["model"]["safetensors_only"] is False


def test_a_config_file_that_is_not_utf8_or_nested_too_deeply_is_refused_by_field(studio, tmp_path):
    upload = tmp_path / "upload.yaml"
    upload.write_bytes(b"iterations: 3\n\xff")
    with pytest.raises(ConfigError, match=r"^config: not UTF-8 text \(byte 0xff at offset 14\)$"):
        studio.config_from_yaml_file(str(upload))
    with pytest.raises(ConfigError, match="config: nested too deeply"):
        studio.config_from_yaml("a: " + "[" * 50_000 + "]" * 50_000)
    with pytest.raises(ConfigError, match=r"config: larger than 256 KiB"):
        studio.config_from_yaml("#" * 300_000)
    with pytest.raises(ConfigError, match=r"could not determine a constructor for the tag"):
        studio.config_from_yaml("iterations: !!python/object/apply:os.system [echo hi]")


def test_listening_on_the_network_without_a_login_is_warned_about(tmp_path):
    import subprocess
    import sys

    from app import exposure_warning

    command = [sys.executable, "app.py", "--host", "0.0.0.0", "--port", "7999", "--devices", "none"]
    process = subprocess.Popen(
        [*command, "--data-dir", str(tmp_path / "home")], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        first = process.stderr.readline()  # printed before the app loads anything
    finally:
        process.kill()
        process.wait()
    assert first.startswith("warning: listening on 0.0.0.0 without --auth: anyone who can reach this machine")
    assert exposure_warning("0.0.0.0", "ann:secret") == "" and exposure_warning("127.0.0.1", None) == ""
