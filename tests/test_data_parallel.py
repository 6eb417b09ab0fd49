"""One job on several processes (gloo on this CPU): N ranks train the LoRA one process trains, rank 0 alone
writes, a dead rank ends the whole job which resumes with every iteration once, and jobs take only the
devices a worker has."""

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.torch import load_file
from test_queue_processes import metric_rows, start_worker, tiny_job, wait_for

from storage.db import Database
from storage.models import JobStatus
from studio.cli import main
from studio.devices import DeviceError, DevicePool, parse_devices, visible_devices
from studio.jobs import JobService
from studio.scheduler import JobScheduler
from trainer_core.config import ConfigError


def write_config(folder: Path, tiny_model: str, **changes) -> Path:
    config = tiny_job(tiny_model, iterations=3)
    config["rollout"].update(prompts_per_iteration=4, group_size=4, steps=3, batch_size=16)
    config["vgrpo"].update(n_mc=2, gradient_steps=2)
    config["logging"].update(sample_every=0, checkpoint_every=2)
    for section, values in changes.items():
        config[section] = {**config[section], **values} if isinstance(values, dict) else values
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def read_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize(
    "changes",
    [
        {"algorithm": "vgrpo"},
        # the SDE rollouts' per-step noise, and a selection of the most informative groups across ranks
        {"algorithm": "flow-grpo", "rollout": {"candidate_prompts": 6}},
    ],
    ids=["vgrpo", "flow-grpo-candidates"],
)
def test_two_processes_train_the_lora_one_process_trains(tmp_path, tiny_model, changes):
    config = write_config(tmp_path, tiny_model, **changes)
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", "--config", str(config), "--out", str(one)]) == 0
    assert main(["train", "--config", str(config), "--out", str(two), "--devices", "2"]) == 0

    lora_one = load_file(one / "checkpoints/final.safetensors")
    lora_two = load_file(two / "checkpoints/final.safetensors")
    assert lora_one.keys() == lora_two.keys()
    moved = max(float(v.abs().max()) for k, v in lora_one.items() if "up" in k)
    assert moved > 1e-4  # the LoRA trained (up weights start at zero)
    for key in lora_one:
        np.testing.assert_allclose(lora_two[key].numpy(), lora_one[key].numpy(), atol=1e-5, err_msg=key)

    rows_one, rows_two = read_rows(one), read_rows(two)
    assert [r["iteration"] for r in rows_two] == [1, 2, 3]  # rank 0 alone wrote each row
    for name in ("reward_mean", "reward_std", "nfe", "trained_groups", "advantage_abs_mean"):
        np.testing.assert_allclose([r[name] for r in rows_two], [r[name] for r in rows_one], rtol=1e-6, err_msg=name)
    np.testing.assert_allclose([r["grad_norm"] for r in rows_two], [r["grad_norm"] for r in rows_one], rtol=1e-3)
    files = sorted(p.relative_to(one).as_posix() for p in one.rglob("*") if p.is_file())
    assert sorted(p.relative_to(two).as_posix() for p in two.rglob("*") if p.is_file()) == files


def ranks_of(launcher_pid: int) -> dict[int, int]:
    """RANK -> pid of the processes torchrun (`launcher_pid`) started."""
    ranks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == launcher_pid:
            for item in environ:
                if item.startswith(b"RANK="):
                    ranks[int(item[5:])] = int(entry.name)
    return ranks


@pytest.mark.slow
def test_killing_one_rank_ends_the_job_which_resumes_with_every_iteration_once(tmp_path, tiny_model):
    from storage.data_dir import DataDir

    data_dir = DataDir(tmp_path / "data").create()
    service = JobService(Database.open(data_dir.default_url()), data_dir)
    config = tiny_job(tiny_model, iterations=30)
    config["logging"].update(checkpoint_every=4)
    config["resources"] = {"devices": 2}
    scheduler = JobScheduler(
        data_dir.default_url(), data_dir, poll_s=0.3, devices=parse_devices("cpu:2"), retry_backoff_s=0.5
    )
    job_id = service.submit(config)
    scheduler.tick()
    assert service.get(job_id).worker_devices == "cpu:0,cpu:1"
    wait_for(lambda: service.get(job_id).iteration >= 6, timeout_s=240)
    launcher = scheduler.running[job_id].process.pid
    ranks = ranks_of(launcher)
    assert sorted(ranks) == [0, 1]
    os.kill(ranks[1], signal.SIGKILL)
    assert scheduler.wait_idle(timeout_s=300)

    job = service.get(job_id)
    assert (job.status, job.attempts) == (JobStatus.DONE, 2)
    assert metric_rows(service, job_id) == list(range(1, 31))  # each iteration's metrics once
    run_rows = [r["iteration"] for r in read_rows(data_dir.run_dir(job_id))]
    assert run_rows == list(range(1, 31))
    assert scheduler.pool.free() == 2  # the devices came back


def test_a_job_asking_more_devices_than_any_worker_has_is_refused_naming_both(tmp_path, tiny_model, capsys):
    from storage.data_dir import DataDir

    data_dir = DataDir(tmp_path / "data").create()
    service = JobService(Database.open(data_dir.default_url()), data_dir)
    config = tiny_job(tiny_model)
    config["resources"] = {"devices": 2}
    assert service.submit(config)  # no worker is running: the job waits for one that can take it
    service.register_worker("w-a", "host-a", 11, ["cuda:0"], 1, 1)
    with pytest.raises(ConfigError, match=r"asks for 2 devices, but the largest worker \(host-a\) has 1"):
        service.submit(config)
    assert len(service.list_jobs()) == 1  # nothing stored for the refused job

    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["jobs", "submit", "--config", str(path), "--data-dir", str(data_dir.root)]) == 2
    refusal = "resources.devices: the job asks for 2 devices, but the largest worker (host-a) has 1"
    assert refusal in capsys.readouterr().err

    # a worker claims only what fits its free devices
    assert service.claim("host-a", max_devices=1) is None
    claimed = service.claim("host-b", max_devices=2)
    assert claimed is not None and claimed[0].devices == 2


def test_device_lists_and_the_pool():
    assert parse_devices("cpu") == ["cpu:0"]
    assert parse_devices("cpu:3") == ["cpu:0", "cpu:1", "cpu:2"]
    assert parse_devices("cuda:0,2") == parse_devices("cuda:0,cuda:2") == ["cuda:0", "cuda:2"]
    for bad, message in (("gpu", "expected cpu, cpu:N"), ("cuda:0,0", "named twice"), ("cpu:0", "N >= 1")):
        with pytest.raises(DeviceError, match=message):
            parse_devices(bad)
    pool = DevicePool(["cuda:0", "cuda:1", "cuda:2"], jobs_per_device=1)
    first = pool.take(2)
    assert (first, pool.free()) == (["cuda:0", "cuda:1"], 1)
    assert visible_devices(first) == "0,1" and visible_devices(["cpu:0"]) == ""
    with pytest.raises(DeviceError, match="2 devices asked for, 1 free"):
        pool.take(2)
    pool.give_back(first)
    assert pool.free() == 3
    shared = DevicePool(["cuda:0"], jobs_per_device=2)
    assert shared.take(1) == shared.take(1) == ["cuda:0"] and shared.free() == 0


@pytest.mark.slow
def test_two_workers_with_different_devices_share_one_postgres_queue(tmp_path, tiny_model):
    from storage.data_dir import DataDir

    url = os.environ.get("VGRPO_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("VGRPO_TEST_POSTGRES_URL is not set: .ci/run must start PostgreSQL (.ci/postgres.sh)")
        pytest.skip("no PostgreSQL server: set VGRPO_TEST_POSTGRES_URL (bash .ci/postgres.sh prints one)")
    from conftest import _reset_postgres

    _reset_postgres(url)
    data_dir = DataDir(tmp_path / "shared").create()  # the data directory every host mounts
    service = JobService(Database.open(url), data_dir)
    wide = tiny_job(tiny_model, iterations=2) | {"resources": {"devices": 2}}
    narrow = tiny_job(tiny_model, iterations=2)
    ids = [service.submit(wide), service.submit(narrow), service.submit(narrow)]
    workers = [start_worker(data_dir, "--db-url", url, "--devices", spec) for spec in ("cpu:1", "cpu:2")]
    try:
        wait_for(lambda: all(service.get(i).status == JobStatus.DONE for i in ids), timeout_s=300, poll_s=0.5)
        live = sorted(len(w.devices) for w in service.live_workers())
        assert live == [1, 2]
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGINT)
            worker.wait(timeout=30)
    jobs = [service.get(i) for i in ids]
    assert jobs[0].worker_devices == "cpu:0,cpu:1"  # only the worker with two devices could take it
    assert [j.attempts for j in jobs] == [1, 1, 1]  # no job ran twice
    assert all(metric_rows(service, i) == [1, 2] for i in ids)


@pytest.mark.slow
def test_sharded_weights_train_the_same_lora_and_resume_from_a_gathered_checkpoint(tmp_path, tiny_model):
    config = write_config(tmp_path, tiny_model)
    (tmp_path / "fsdp").mkdir()
    sharded_config = write_config(tmp_path / "fsdp", tiny_model, resources={"devices": 2, "fsdp": True})
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", "--config", str(config), "--out", str(one)]) == 0
    # two iterations, a checkpoint at 2 (gathered from both shards), then resumed on sharded weights to 3
    assert main(["train", "--config", str(sharded_config), "--out", str(two), "--iterations", "2"]) == 0
    assert main(["train", "--out", str(two), "--resume", "--iterations", "3"]) == 0
    lora_one = load_file(one / "checkpoints/final.safetensors")
    lora_two = load_file(two / "checkpoints/final.safetensors")
    for key in lora_one:
        np.testing.assert_allclose(lora_two[key].numpy(), lora_one[key].numpy(), atol=1e-5, err_msg=key)
    assert [r["iteration"] for r in read_rows(two)] == [1, 2, 3]
    np.testing.assert_allclose(
        [r["reward_mean"] for r in read_rows(two)], [r["reward_mean"] for r in read_rows(one)], rtol=1e-6
    )
