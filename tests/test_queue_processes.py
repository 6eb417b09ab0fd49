"""The queue with real processes and a real database: killed workers, competing schedulers, restarts."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from storage.data_dir import DataDir
from storage.db import Database
from storage.models import JobStatus, Metric
from studio.cli import main
from studio.jobs import JobService
from studio.scheduler import JobScheduler
from trainer_core.config import load_preset, to_dict


@pytest.fixture
def data_dir(tmp_path) -> DataDir:
    return DataDir(tmp_path / "data").create()


@pytest.fixture
def service(data_dir):
    database = Database.open(data_dir.default_url())
    yield JobService(database, data_dir)
    database.dispose()


def tiny_job(tiny_model: str, iterations: int = 1) -> dict:
    config = to_dict(load_preset("shapes-smoke"))
    config["model"]["name"] = tiny_model
    config["iterations"] = iterations
    config["rollout"].update(prompts_per_iteration=2, group_size=2, steps=2)
    config["vgrpo"].update(n_mc=1, gradient_steps=1)
    config["logging"].update(sample_every=0, checkpoint_every=1)
    return config


def wait_for(condition, timeout_s: float, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def metric_rows(service: JobService, job_id: int, name: str = "reward_mean") -> list[int]:
    with service.db.session() as session:
        return list(
            session.scalars(
                select(Metric.iteration).where(Metric.job_id == job_id, Metric.name == name).order_by(Metric.iteration)
            )
        )


def start_worker(data_dir: DataDir, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "studio.cli", "worker", "--data-dir", str(data_dir.root), "--poll", "0.3", *extra]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_a_job_whose_process_is_killed_resumes_from_its_checkpoint(service, data_dir):
    config = to_dict(load_preset("shapes-smoke"))  # 6 iterations, a checkpoint every 3
    job_id = service.submit(config)
    scheduler = JobScheduler(data_dir.default_url(), data_dir, poll_s=0.3, stale_after_s=20, retry_backoff_s=0.5)
    scheduler.tick()
    wait_for(lambda: service.get(job_id).iteration >= 4, timeout_s=240)
    victim = service.get(job_id).worker_pid
    os.kill(victim, signal.SIGKILL)
    assert scheduler.wait_idle(timeout_s=300)
    job = service.get(job_id)
    assert (job.status, job.attempts) == (JobStatus.DONE, 2)
    assert job.worker_pid is None
    assert metric_rows(service, job_id) == [1, 2, 3, 4, 5, 6]  # each iteration exactly once
    lines = (data_dir.run_dir(job_id) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3, 4, 5, 6]
    assert (data_dir.run_dir(job_id) / "checkpoints" / "final.safetensors").is_file()
    assert "job process killed by SIGKILL" in (job.error or "")


@pytest.mark.slow
def test_two_schedulers_never_run_the_same_job_twice(service, data_dir, tiny_model):
    ids = service.submit_many([tiny_job(tiny_model)] * 50)
    workers = [start_worker(data_dir, "--max-concurrent-jobs", "1") for _ in range(2)]
    try:
        wait_for(
            lambda: (
                not service.list_jobs(limit=1000, status=JobStatus.QUEUED)
                and not service.list_jobs(limit=1000, status=JobStatus.RUNNING)
            ),
            timeout_s=1500,
            poll_s=1,
        )
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    views = service.list_jobs(limit=1000)
    assert sorted(v.id for v in views) == sorted(ids)
    assert {v.status for v in views} == {JobStatus.DONE}
    assert {v.attempts for v in views} == {1}  # claimed once, run once
    with service.db.session() as session:
        counts = session.execute(
            select(Metric.job_id, func.count()).where(Metric.name == "reward_mean").group_by(Metric.job_id)
        ).all()
    assert sorted(counts) == [(job_id, 1) for job_id in sorted(ids)]
    for job_id in ids:
        assert len((data_dir.run_dir(job_id) / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.slow
def test_restarting_the_scheduler_while_a_job_runs_loses_nothing(service, data_dir, tiny_model):
    job_id = service.submit(tiny_job(tiny_model, iterations=12))
    first = start_worker(data_dir)
    wait_for(lambda: service.get(job_id).iteration >= 2, timeout_s=120)
    first.kill()  # the app goes away; the job's own process keeps running
    first.wait()
    written = metric_rows(service, job_id)
    second = start_worker(data_dir)
    try:
        wait_for(lambda: service.get(job_id).status == JobStatus.DONE, timeout_s=300, poll_s=0.5)
    finally:
        second.kill()
        second.wait()
    rows = metric_rows(service, job_id)
    assert rows == list(range(1, 13))
    assert set(written) <= set(rows)
    assert service.get(job_id).attempts == 1  # never requeued: the job process was never lost


def test_jobs_cli_submits_lists_shows_and_cancels(data_dir, capsys):
    home = ["--data-dir", str(data_dir.root)]
    assert main(["jobs", "submit", "--preset", "shapes-smoke", *home]) == 0
    job_id = int(capsys.readouterr().out.strip())
    assert main(["jobs", "list", *home]) == 0
    listing = capsys.readouterr().out
    assert "queued" in listing and "0/6" in listing
    assert main(["jobs", "show", str(job_id), "--json", *home]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["status"] == "queued" and shown["config"]["algorithm"] == "vgrpo"
    assert main(["jobs", "cancel", str(job_id), *home]) == 0
    assert "cancelled" in capsys.readouterr().out
    assert main(["jobs", "cancel", str(job_id), *home]) == 2
    assert "cannot cancel a cancelled job" in capsys.readouterr().err


def test_jobs_cli_refuses_a_bad_config_naming_the_field(data_dir, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimizer: {learning_rate: -0.001}\nrewards: {weights: {geneval: 1.0}}\n")
    assert main(["jobs", "submit", "--config", str(bad), "--data-dir", str(data_dir.root)]) == 2
    assert "optimizer.learning_rate" in capsys.readouterr().err
    assert main(["jobs", "list", "--data-dir", str(data_dir.root)]) == 0
    assert "no jobs" in capsys.readouterr().out
    assert not list(Path(data_dir.runs).iterdir())


@pytest.mark.slow
def test_cancelling_a_running_job_stops_it_at_an_iteration_with_a_checkpoint(service, data_dir, tiny_model):
    config = tiny_job(tiny_model, iterations=200)
    config["logging"]["checkpoint_every"] = 50  # the stop must write its own checkpoint
    job_id = service.submit(config)
    scheduler = JobScheduler(data_dir.default_url(), data_dir, poll_s=0.3)
    scheduler.tick()
    wait_for(lambda: service.get(job_id).iteration >= 2, timeout_s=120)
    service.cancel(job_id)
    assert scheduler.wait_idle(timeout_s=120)
    job = service.get(job_id)
    assert job.status == JobStatus.CANCELLED
    stopped_at = metric_rows(service, job_id)[-1]
    assert 2 <= stopped_at < 200
    assert [c.iteration for c in service.checkpoints(job_id)] == [stopped_at]
    service.retry(job_id)  # picks up from that checkpoint
    assert service.get(job_id).status == JobStatus.QUEUED


def test_a_failure_that_would_recur_ends_the_job_after_one_attempt(service, data_dir, tiny_model):
    """The prompts file vanished between submit and run: the job process fails it at once, with the reason
    on the first line of its error, instead of running it three times."""
    (data_dir.prompts / "mine.txt").write_text("a red circle\n")
    config = tiny_job(tiny_model) | {"rewards": {"weights": {"jpeg_compressibility": 1.0}}}
    config["rollout"]["prompts"] = "mine.txt"
    job_id = service.submit(config, max_attempts=3)
    (data_dir.prompts / "mine.txt").unlink()
    scheduler = JobScheduler(data_dir.default_url(), data_dir, poll_s=0.3, retry_backoff_s=0.5)
    assert scheduler.wait_idle(timeout_s=120)
    job = service.get(job_id)
    assert (job.status, job.attempts) == (JobStatus.FAILED, 1)
    assert job.error.splitlines()[0] == (
        "config or data error: ValueError: rollout.prompts: "
        f"'{data_dir.prompts / 'mine.txt'}' is neither one of train, train-balanced, train-adaptive, "
        "train-counterfactual nor an existing prompts file"
    )
    assert "Traceback" in job.error  # the details stay below the reason
