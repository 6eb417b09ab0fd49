"""Storage and the job service, against SQLite and PostgreSQL."""

import time

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, insert, inspect, select
from sqlalchemy.exc import IntegrityError

from storage.data_dir import DataDir
from storage.db import Database
from storage.models import Base, Job, JobStatus, Metric, utcnow
from studio.jobs import JobError, JobService
from trainer_core.config import ConfigError, load_preset, to_dict


@pytest.fixture
def service(database_url, tmp_path):
    database = Database.open(database_url)
    yield JobService(database, DataDir(tmp_path / "data").create())
    database.dispose()


def smoke() -> dict:
    return to_dict(load_preset("shapes-smoke"))


def count_jobs(service: JobService) -> int:
    with service.db.session() as session:
        return session.scalar(select(func.count()).select_from(Job))


def test_migrations_build_exactly_the_models(service):
    tables = set(inspect(service.db.engine).get_table_names())
    assert {"jobs", "metrics", "samples", "checkpoints", "exports", "preference_labels", "alembic_version"} <= tables
    with service.db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    Database.open(service.db.url).dispose()  # opening again is a no-op upgrade


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path):
    database = Database.open(DataDir(tmp_path).default_url())
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
    assert (tmp_path / "studio.db").is_file()


def test_a_metric_is_stored_once_per_job_iteration_and_name(service):
    job_id = service.submit(smoke())
    claimed, token = service.claim("host")
    assert claimed.id == job_id
    assert service.record_iteration(job_id, token, {"iteration": 1, "reward_mean": 0.5, "loss": 0.1})
    assert service.record_iteration(job_id, token, {"iteration": 1, "reward_mean": 0.7, "loss": 0.2})  # upsert
    assert service.metrics(job_id)["reward_mean"] == [(1, 0.7)]
    with pytest.raises(IntegrityError), service.db.session() as session:
        session.execute(insert(Metric).values(job_id=job_id, iteration=1, name="loss", value=0.0))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda c: c["model"].update(name="no-such-model"), "model.name"),
        (lambda c: c["optimizer"].update(learning_rate=-1e-3), "optimizer.learning_rate"),
        (lambda c: c["optimizer"].update(learning_rate="abc"), "optimizer.learning_rate"),
        (lambda c: c["rewards"].update(weights={"aesthetics": 1.0}), "rewards.weights.aesthetics"),
        (lambda c: c.update(algorithm="ppo"), "algorithm"),
    ],
)
def test_bad_configs_are_refused_naming_the_field_and_store_nothing(service, change, field):
    service.submit(smoke())
    config = smoke()
    change(config)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        service.submit(config)
    with pytest.raises(ConfigError):
        service.submit_many([smoke(), config])  # all or nothing
    assert count_jobs(service) == 1


def test_claims_follow_priority_and_each_job_is_claimed_once(service):
    low = service.submit(smoke(), priority=0)
    high = service.submit(smoke(), priority=5)
    first, second = service.claim("a"), service.claim("b")
    assert (first[0].id, second[0].id) == (high, low)
    assert service.claim("c") is None
    assert first[0].attempts == 1 and first[0].status == JobStatus.RUNNING


def test_controls_move_jobs_only_along_allowed_transitions(service):
    job_id = service.submit(smoke())
    service.pause(job_id)
    assert service.get(job_id).status == JobStatus.PAUSED
    assert service.claim("w") is None  # paused jobs are not claimed
    service.resume(job_id)
    _, token = service.claim("w")
    service.cancel(job_id)
    assert service.get(job_id).status == JobStatus.CANCELLING  # the worker stops at its next iteration
    assert service.heartbeat(job_id, token) == JobStatus.CANCELLING
    assert service.finish(job_id, token, "stopped") == JobStatus.CANCELLED
    with pytest.raises(JobError, match="cannot go from cancelled"):
        service.resume(job_id)
    service.retry(job_id)
    job = service.get(job_id)
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 0)
    with pytest.raises(JobError, match="no such job"):
        service.cancel(99999)


def test_stale_jobs_are_requeued_after_a_backoff_then_fail_with_the_last_error(service):
    service.retry_backoff_s = 0.4
    job_id = service.submit(smoke(), max_attempts=3)
    waits = []
    for attempt in (1, 2, 3):
        job, token = service.claim("w")
        assert job.attempts == attempt
        assert service.finish(job_id, token, "error", f"boom {attempt}") == (
            JobStatus.QUEUED if attempt < 3 else JobStatus.FAILED
        )
        if attempt < 3:
            assert service.requeue_stale(timeout_s=0) == []  # nothing running
            assert service.claim("w") is None  # not before its backoff
            started = time.monotonic()
            while service.get(job_id).retry_at.replace(tzinfo=None) > utcnow().replace(tzinfo=None):
                time.sleep(0.05)
            waits.append(time.monotonic() - started)
    assert waits[1] > waits[0] + 0.2  # 0.4 s, then 0.8 s
    assert "boom 3" in service.get(job_id).error
    service.retry(job_id)
    job, token = service.claim("w")  # a person's retry runs at once
    time.sleep(0.05)
    assert service.requeue_stale(timeout_s=0.01) == [job_id]
    assert service.get(job_id).status == JobStatus.QUEUED
    assert service.heartbeat(job_id, token) == "lost"  # the old worker learns it lost the job
    assert not service.record_iteration(job_id, token, {"iteration": 1, "loss": 1.0})


def test_a_failure_that_would_recur_fails_the_job_at_once(service):
    job_id = service.submit(smoke(), max_attempts=3)
    _, token = service.claim("w")
    assert service.finish(job_id, token, "failed", "out of memory (...)\n\ntraceback") == JobStatus.FAILED
    job = service.get(job_id)
    assert (job.status, job.attempts, job.error.splitlines()[0]) == (JobStatus.FAILED, 1, "out of memory (...)")
    with pytest.raises(ValueError, match="outcome: must be one of done, stopped, failed, error"):
        service.finish(job_id, token, "crashed")


def test_five_hundred_jobs_are_stored_and_listed(service):
    started = time.perf_counter()
    ids = service.submit_many([smoke()] * 500)
    submitted = time.perf_counter() - started
    started = time.perf_counter()
    listed = service.list_jobs(limit=1000)
    listing = time.perf_counter() - started
    assert len(ids) == 500 and len(listed) == 500
    assert [v.id for v in listed] == sorted(ids, reverse=True)
    print(f"\n500 jobs on {service.db.engine.dialect.name}: submit {submitted:.2f} s, list {listing * 1000:.0f} ms")


def test_the_data_directory_refuses_paths_outside_it(tmp_path):
    data = DataDir(tmp_path / "data").create()
    assert data.inside("runs/job_000001") == (tmp_path / "data" / "runs" / "job_000001").resolve()
    for bad in ("../outside", "/etc/passwd", "runs/../../x"):
        with pytest.raises(ValueError, match="outside the data directory"):
            data.inside(bad)


@pytest.mark.parametrize(
    ("request_", "outcome", "expected"),
    [
        ("cancel", "error", JobStatus.CANCELLED),  # not requeued: the person asked for it to stop
        ("pause", "error", JobStatus.PAUSED),
        ("cancel", "stopped", JobStatus.CANCELLED),
        ("pause", "stopped", JobStatus.PAUSED),
        ("cancel", "done", JobStatus.DONE),
    ],
)
def test_a_request_that_lands_before_a_job_ends_decides_how_it_ends(service, request_, outcome, expected):
    job_id = service.submit(smoke())
    _, token = service.claim("host")
    getattr(service, request_)(job_id)
    assert service.finish(job_id, token, outcome, "boom") == expected
    job = service.get(job_id)
    assert (job.status, job.worker_id) == (expected, None)
    assert (job.finished_at is not None) == (expected in JobStatus.FINAL)
    assert service.finish(job_id, token, "error") == "lost"  # ended once


def test_a_cancel_racing_the_end_of_a_failed_attempt_is_never_lost(service):
    """Two threads: one ends an attempt with an error (-> requeue), one cancels. In any order the job ends
    cancelled; a finish that read the row, then wrote it, would requeue it when the cancel fell between."""
    import threading

    for _ in range(25):
        job_id = service.submit(smoke())
        _, token = service.claim("host")
        start = threading.Barrier(2)

        def end(job_id: int = job_id, token: str = token, start: threading.Barrier = start) -> None:
            start.wait()
            service.finish(job_id, token, "error", "boom")

        def cancel(job_id: int = job_id, start: threading.Barrier = start) -> None:
            start.wait()
            service.cancel(job_id)

        threads = [threading.Thread(target=end), threading.Thread(target=cancel)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert service.get(job_id).status == JobStatus.CANCELLED
