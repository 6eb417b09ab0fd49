"""Admission at submit: jobs the workers' devices cannot hold are refused with the estimate, the limit and
the field to lower, and nothing is stored."""

import dataclasses

import pytest

from storage.data_dir import DataDir
from storage.db import Database
from studio.admission import estimate_for
from studio.cli import main
from studio.devices import device_memory
from studio.jobs import JobService
from trainer_core.config import ConfigError, from_dict, load_preset, to_dict
from trainer_core.memory_estimate import GIB, estimate_peak_memory, lora_parameters, read_components
from trainer_core.model_zoo import resolve_model


@pytest.fixture
def service(tmp_path):
    data_dir = DataDir(tmp_path / "data").create()
    database = Database.open(data_dir.default_url())
    yield JobService(database, data_dir)
    database.dispose()


def quickstart(**sections) -> dict:
    config = to_dict(load_preset("shapes-quickstart"))
    for section, values in sections.items():
        config[section].update(values)
    return config


def test_a_job_too_large_for_every_worker_is_refused_naming_what_to_lower(service):
    service.register_worker("small", "host-s", 1, ["cpu:0"], 1, 1, memory=1 * GIB)
    big = quickstart(rollout={"batch_size": 256}, vgrpo={"n_mc": 8})
    estimate = estimate_for(from_dict(type(load_preset("shapes-quickstart")), big), service.data_dir, "cpu")
    assert estimate.total > GIB
    with pytest.raises(ConfigError) as refused:
        service.submit(big)
    message = str(refused.value)
    assert message.startswith("rollout.batch_size: the job needs about ")
    assert "each cpu device of worker (host-s) has 1.00 GiB" in message and "activations" in message
    assert service.list_jobs() == []  # nothing stored

    # a worker with room takes it; the estimate is stored with the job
    service.register_worker("large", "host-l", 2, ["cpu:0"], 1, 1, memory=8 * GIB)
    job_id = service.submit(big)
    assert service.get(job_id).memory_estimate == estimate.total


def test_with_no_worker_the_job_must_fit_this_machine(service):
    limit = device_memory(["cpu:0"])
    huge = quickstart(model={"resolution": 4096})  # the shapes model in pixel space, 16.7 M pixels an image
    with pytest.raises(ConfigError, match=r"^rollout\.batch_size: the job needs about \d+ GiB .* this machine") as e:
        service.submit(huge)
    assert f"has {limit / GIB:.0f} GiB" in str(e.value) or f"has {limit / GIB:.2f} GiB" in str(e.value)
    assert service.list_jobs() == []


def test_the_field_to_lower_is_the_part_that_weighs_most(service):
    service.register_worker("w", "host-w", 1, ["cuda:0"], 1, 1, memory=4 * GIB)
    many = quickstart(rollout={"prompts_per_iteration": 1024, "group_size": 16, "batch_size": 4})
    many["model"]["resolution"] = 128
    with pytest.raises(
        ConfigError,
        match=r"^rollout\.group_size: .* each cuda device of worker \(host-w\) has 4\.00 GiB; the rollouts weigh most",
    ):
        service.submit(many)
    ranked = quickstart(lora={"rank": 1024})
    service.register_worker("w", "host-w", 1, ["cuda:0"], 1, 1, memory=int(0.7 * GIB))
    with pytest.raises(ConfigError, match=r"^lora\.rank: .* the LoRA and optimizer state weigh most"):
        service.submit(ranked)
    assert service.list_jobs() == []


def test_the_command_line_refuses_what_does_not_fit_too(tmp_path, capsys):
    config = tmp_path / "big.yaml"
    config.write_text("model: {resolution: 4096}\n")
    assert main(["jobs", "submit", "--data-dir", str(tmp_path / "home"), "--config", str(config)]) == 2
    assert "rollout.batch_size: the job needs about" in capsys.readouterr().err


def test_the_estimate_counts_what_the_config_changes():
    """Each part moves with the fields that drive it, in the proportion the formula says."""
    path = resolve_model("shapes-base")
    base = load_preset("shapes-quickstart")

    def estimate(**changes):
        config = base
        for section, values in changes.items():
            config = dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **values)})
        return estimate_peak_memory(config, path, "cpu")

    first = estimate()
    assert estimate(rollout={"batch_size": 32}).activations == pytest.approx(first.activations / 2, rel=1e-6)
    assert estimate(rollout={"group_size": 16}).rollouts == pytest.approx(2 * first.rollouts, rel=1e-6)
    assert estimate(lora={"rank": 32}).lora_optimizer == 2 * first.lora_optimizer
    on_gpu = estimate_peak_memory(base, path, "cuda")
    assert on_gpu.weights == first.weights // 2  # bf16 weights on a GPU
    unet = read_components(path)["unet"]
    assert first.weights == 4 * sum(c.params for c in read_components(path).values())
    # LoRA on to_q alone: rank x (in + out) per attention query projection of the UNet
    queries = [shape for key, shape in unet.shapes if key.endswith("to_q.weight")]
    assert lora_parameters(unet, ("to_q",), 4) == sum(4 * (s[0] + s[1]) for s in queries) > 0
