"""The job service: submit, list, control and claim training jobs stored in the database.

Everything the UI, the CLI and the workers do to jobs goes through `JobService`. State changes
are single conditional UPDATEs (`... WHERE id = :id AND status IN (...)`), so two processes can
never both win a claim or both finish a job, on SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, literal, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from storage.data_dir import DataDir
from storage.db import Database
from storage.models import Checkpoint, Job, JobStatus, Metric, Sample, Worker, utcnow
from studio.admission import admit
from studio.reward_catalog import RewardCatalog, is_preference
from trainer_core.config import ConfigError, TrainConfig, from_dict, to_dict

S = JobStatus
#: a worker that has not said it lives for this long no longer counts at submit
WORKER_STALE_S = 60.0
#: how a claimed job can end (`JobService.finish`)
OUTCOMES = ("done", "stopped", "failed", "error")
#: the first wait before a job whose attempt failed for a reason that may pass runs again; it doubles
RETRY_BACKOFF_S = 10.0
MAX_RETRY_BACKOFF_S = 600.0


class JobError(ValueError):
    """A job request that cannot be honoured (unknown job, wrong state, invalid config)."""


def validate_config(
    data: dict[str, Any] | TrainConfig, catalog: RewardCatalog | None = None, data_dir: DataDir | None = None
) -> TrainConfig:
    """The whole config, checked before anything is stored: fields; the model, its weights in safetensors
    (unless allowed otherwise), the rewards and the prompts file exist and can be read.

    Relative paths are looked up in `data_dir` (`studio.paths`; the default data directory when None),
    preference rewards in `catalog` (the data directory's when None).
    """
    from trainer_core.adapters import model_family
    from trainer_core.model_zoo import ModelNotFoundError, pickled_only_components, resolve_model

    data_dir = data_dir or DataDir()
    config = data if isinstance(data, TrainConfig) else from_dict(TrainConfig, data)
    try:
        model_family(config.model.name, data_dir.models)
    except ModelNotFoundError as error:
        message = str(error).removeprefix("model:").strip()
        raise ConfigError(f"model.name: {message}") from None
    pickled = pickled_only_components(resolve_model(config.model.name, data_dir.models))
    if pickled and config.model.safetensors_only:
        raise ConfigError(
            f"model.name: {config.model.name} has weights only as pickles, which can run code when read: "
            f"{'; '.join(pickled)}; convert them to safetensors, or (the machine's owner, from the command line) "
            "set model.safetensors_only: false"
        )
    (catalog or RewardCatalog(data_dir)).check(config.rewards.weights, config.rewards)
    check_prompts_file(config, data_dir)
    return config


def check_prompts_file(config: TrainConfig, data_dir: DataDir) -> None:
    """A prompts file is readable text and every reward of the mix that reads prompts can read each line
    (a shapes reward on a free-text prompt would fail the job at its first iteration). Errors name the
    file as the config does, and a line by its number, never by its content."""
    from studio.paths import in_data_dir
    from trainer_core.prompt_source import PromptSource, read_prompt_lines
    from trainer_core.rewards.registry import reward_specs

    named = config.rollout.prompts
    if named in PromptSource.SPECS:
        return
    located = in_data_dir(config, data_dir).rollout.prompts
    try:
        lines = read_prompt_lines(located)
    except ValueError as error:
        raise ConfigError(str(error).replace(located, named)) from None
    specs = reward_specs()
    for name in config.rewards.scored:
        check = specs[name].prompt_problem if name in specs else None
        for number, line in lines if check else ():
            problem = check(line)
            if problem:
                raise ConfigError(f"rollout.prompts: {config.rollout.prompts}:{number}: reward {name}: {problem}")


def pin_rewards(config: TrainConfig, catalog: RewardCatalog) -> TrainConfig:
    """The config with each preference reward pinned to the version it will train on (or monitor)."""
    weights = catalog.pin(config.rewards.weights)
    monitor = tuple(str(catalog.resolve(n)) if is_preference(n) else n for n in config.rewards.monitor)
    return dataclasses.replace(config, rewards=dataclasses.replace(config.rewards, weights=weights, monitor=monitor))


@dataclass(frozen=True)
class JobView:
    """What lists and detail views show of a job."""

    id: int
    name: str
    algorithm: str
    status: str
    priority: int
    attempts: int
    iteration: int
    total_iterations: int
    reward_mean: float | None
    eta_s: float | None
    created_at: datetime
    error: str | None
    last_checkpoint: str | None


class JobService:
    def __init__(self, database: Database, data_dir: DataDir, retry_backoff_s: float = RETRY_BACKOFF_S) -> None:
        self.db, self.data_dir = database, data_dir
        self.catalog = RewardCatalog(data_dir)
        self.retry_backoff_s = retry_backoff_s

    # --- submitting and controlling ---------------------------------------------------------

    def submit(
        self, config: dict[str, Any] | TrainConfig, name: str = "", priority: int = 0, max_attempts: int = 3
    ) -> int:
        """Validate, then store a queued job; returns its id. Invalid input stores nothing."""
        return self.submit_many([config], priority, max_attempts, name)[0]

    def submit_many(
        self, configs: list[dict[str, Any] | TrainConfig], priority: int = 0, max_attempts: int = 3, name: str = ""
    ) -> list[int]:
        """Several jobs in one transaction, all validated first: all are stored or none is. Preference
        rewards are pinned to their latest version (`pref:NAME` -> `pref:NAME@vN`)."""
        checked = [pin_rewards(validate_config(c, self.catalog, self.data_dir), self.catalog) for c in configs]
        if max_attempts < 1:
            raise JobError(f"max_attempts: must be at least 1, got {max_attempts}")
        workers = self.live_workers()
        estimates = [admit(config, self.data_dir, workers) for config in checked]  # every one fits a worker
        with self.db.session() as session:
            jobs = [
                Job(
                    name=name or f"{c.algorithm} on {c.model.name}",
                    config=to_dict(c),
                    status=S.QUEUED,
                    priority=priority,
                    attempts=0,
                    max_attempts=max_attempts,
                    iteration=0,
                    total_iterations=c.iterations,
                    devices=c.resources.devices,
                    memory_estimate=estimate,
                )
                for c, estimate in zip(checked, estimates, strict=True)
            ]
            session.add_all(jobs)
            session.flush()
            return [j.id for j in jobs]

    def submit_task(self, kind: str, payload: dict[str, Any], name: str, steps: int) -> int:
        """Queue an inference job (`studio.inference`) ahead of every training job; `steps`: the progress
        its worker reports, as iterations."""
        from studio.inference import INFERENCE_KINDS, INFERENCE_PRIORITY

        if kind not in INFERENCE_KINDS:
            raise JobError(f"kind: must be one of {', '.join(INFERENCE_KINDS)}, got {kind!r}")
        with self.db.session() as session:
            job = Job(
                name=name,
                kind=kind,
                config=payload,
                status=S.QUEUED,
                priority=INFERENCE_PRIORITY,
                attempts=0,
                max_attempts=2,
                iteration=0,
                total_iterations=steps,
                devices=1,
            )
            session.add(job)
            session.flush()
            return job.id

    def queued_ahead(self, job: Job) -> int:
        """Queued jobs a worker would take before `job`."""
        with self.db.session() as session:
            return (
                session.scalar(
                    select(func.count(Job.id)).where(
                        Job.status == S.QUEUED,
                        (Job.priority > job.priority) | ((Job.priority == job.priority) & (Job.id < job.id)),
                    )
                )
                or 0
            )

    def _transition(self, job_id: int, allowed: tuple[str, ...], new: str, **values: Any) -> None:
        """From any of `allowed` to `new`, or a JobError naming the job's status."""
        refusal = f"cannot go from {{status}} to {new}; allowed from {', '.join(allowed)}"
        self._move(job_id, dict.fromkeys(allowed, new), refusal, **values)

    def _move(self, job_id: int, moves: dict[str, str], refusal: str, **values: Any) -> None:
        """Move the job by `moves` (status now -> new status) in one conditional UPDATE, whatever status it
        has at that moment (a worker may be ending it meanwhile); `refusal` ({status} filled in) when it
        has none of them."""
        status = case(*((Job.status == old, new) for old, new in moves.items()))
        ended = case((status.in_(S.FINAL), utcnow()), else_=Job.finished_at)
        with self.db.session() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.status.in_(moves))
                .values(status=status, **{"finished_at": ended, **values})
            )
            if result.rowcount == 1:
                return
            current = session.scalar(select(Job.status).where(Job.id == job_id))
        if current is None:
            raise JobError(f"job {job_id}: no such job")
        raise JobError(f"job {job_id}: " + refusal.format(status=current))

    def cancel(self, job_id: int) -> None:
        """Queued or paused jobs end now; a running one stops at its next iteration, with a checkpoint."""
        moves = {S.QUEUED: S.CANCELLED, S.PAUSED: S.CANCELLED, S.RUNNING: S.CANCELLING, S.PAUSING: S.CANCELLING}
        self._move(job_id, moves, f"cannot cancel a {{status}} job; allowed when {', '.join(moves)}")

    def pause(self, job_id: int) -> None:
        """A queued job waits outside the queue; a running one stops at its next iteration, with a checkpoint."""
        moves = {S.QUEUED: S.PAUSED, S.RUNNING: S.PAUSING}
        self._move(job_id, moves, f"cannot pause a {{status}} job; allowed when {', '.join(moves)}")

    def resume(self, job_id: int) -> None:
        """A paused job goes back to the queue and continues from its last checkpoint."""
        self._transition(job_id, (S.PAUSED,), S.QUEUED)

    def retry(self, job_id: int) -> None:
        """A failed or cancelled job is queued again with fresh attempts; it resumes from its checkpoint."""
        self._transition(
            job_id, (S.FAILED, S.CANCELLED), S.QUEUED, attempts=0, error=None, finished_at=None, retry_at=None
        )

    # --- reading ----------------------------------------------------------------------------

    def get(self, job_id: int) -> Job:
        with self.db.session() as session:
            job = session.get(Job, job_id)
        if job is None:
            raise JobError(f"job {job_id}: no such job")
        return job

    def list_jobs(
        self, limit: int = 100, offset: int = 0, status: str | None = None, kind: str | None = "train"
    ) -> list[JobView]:
        """Newest first, with each job's latest reward and ETA, in two queries whatever the count; training
        jobs only unless `kind` says otherwise (None: every kind, inference jobs included)."""
        with self.db.session() as session:
            query = select(Job).order_by(Job.id.desc()).limit(limit).offset(offset)
            if status:
                query = query.where(Job.status == status)
            if kind:
                query = query.where(Job.kind == kind)
            jobs = list(session.scalars(query))
            latest = self._latest_values(session, [j.id for j in jobs], ("reward_mean", "wall_time_s"))
        return [self._view(j, latest.get(j.id, {})) for j in jobs]

    def view(self, job_id: int) -> JobView:
        job = self.get(job_id)
        with self.db.session() as session:
            latest = self._latest_values(session, [job_id], ("reward_mean", "wall_time_s"))
        return self._view(job, latest.get(job_id, {}))

    @staticmethod
    def _latest_values(session: Session, job_ids: list[int], names: tuple[str, ...]) -> dict[int, dict[str, float]]:
        """job -> {name: value at the job's latest iteration}."""
        if not job_ids:
            return {}
        last = (
            select(Metric.job_id, func.max(Metric.iteration).label("iteration"))
            .where(Metric.job_id.in_(job_ids))
            .group_by(Metric.job_id)
            .subquery()
        )
        rows = session.execute(
            select(Metric.job_id, Metric.name, Metric.value)
            .join(last, (Metric.job_id == last.c.job_id) & (Metric.iteration == last.c.iteration))
            .where(Metric.name.in_(names))
        )
        values: dict[int, dict[str, float]] = {}
        for job_id, name, value in rows:
            values.setdefault(job_id, {})[name] = value
        return values

    @staticmethod
    def _view(job: Job, latest: dict[str, float]) -> JobView:
        eta = None
        if job.status in (S.RUNNING, S.CANCELLING, S.PAUSING) and job.iteration > 0 and "wall_time_s" in latest:
            eta = latest["wall_time_s"] / job.iteration * (job.total_iterations - job.iteration)
        return JobView(
            job.id,
            job.name,
            job.config.get("algorithm", "vgrpo") if job.kind == "train" else job.kind,
            job.status,
            job.priority,
            job.attempts,
            job.iteration,
            job.total_iterations,
            latest.get("reward_mean"),
            eta,
            job.created_at,
            job.error,
            job.last_checkpoint,
        )

    def metrics(self, job_id: int, names: list[str] | None = None) -> dict[str, list[tuple[int, float]]]:
        """name -> [(iteration, value)] in iteration order."""
        with self.db.session() as session:
            query = select(Metric.name, Metric.iteration, Metric.value).where(Metric.job_id == job_id)
            if names:
                query = query.where(Metric.name.in_(names))
            rows = session.execute(query.order_by(Metric.iteration))
            series: dict[str, list[tuple[int, float]]] = {}
            for name, iteration, value in rows:
                series.setdefault(name, []).append((iteration, value))
        return series

    def sample_grids(self, job_id: int) -> list[tuple[int, str]]:
        """(iteration, absolute PNG path) of every sample grid, oldest first."""
        with self.db.session() as session:
            rows = session.execute(
                select(Sample.iteration, Sample.image_path)
                .where(Sample.job_id == job_id)
                .distinct()
                .order_by(Sample.iteration)
            )
            return [(iteration, str(self.data_dir.inside(path))) for iteration, path in rows]

    def sample_rows(self, job_id: int) -> list[tuple[int, list[str], list[int], str]]:
        """(iteration, prompts, seeds, absolute PNG path) of every sample grid, oldest first: the grid has a
        row per prompt and a column per seed, in these orders."""
        grids: dict[int, tuple[list[str], list[int], str]] = {}
        with self.db.session() as session:
            rows = session.execute(
                select(Sample.iteration, Sample.prompt, Sample.seed, Sample.image_path)
                .where(Sample.job_id == job_id)
                .order_by(Sample.iteration, Sample.id)
            )
            for iteration, prompt, seed, path in rows:
                prompts, seeds, _ = grids.setdefault(iteration, ([], [], path))
                if prompt not in prompts:
                    prompts.append(prompt)
                if seed not in seeds:
                    seeds.append(seed)
        return [(i, p, s, str(self.data_dir.inside(path))) for i, (p, s, path) in sorted(grids.items())]

    def checkpoints(self, job_id: int) -> list[Checkpoint]:
        with self.db.session() as session:
            return list(
                session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.iteration))
            )

    def checkpoints_by_id(self, ids: list[int]) -> list[Checkpoint]:
        with self.db.session() as session:
            return list(session.scalars(select(Checkpoint).where(Checkpoint.id.in_(ids))))

    def recent_checkpoints(self, limit: int = 100) -> list[Checkpoint]:
        """Newest first: the latest jobs' checkpoints, latest iteration first."""
        with self.db.session() as session:
            query = select(Checkpoint).order_by(Checkpoint.job_id.desc(), Checkpoint.iteration.desc()).limit(limit)
            return list(session.scalars(query))

    # --- the worker's side ------------------------------------------------------------------

    def claim(
        self,
        host: str = "",
        pid: int | None = None,
        max_devices: int | None = None,
        kinds: tuple[str, ...] | None = None,
    ) -> tuple[Job, str] | None:
        """Atomically take the highest-priority queued job of `kinds` (any when None) that needs at most
        `max_devices` devices (any when None); returns it and the lease token, or None.

        The UPDATE only matches while the job is still queued, so of several claimers exactly one wins.
        """
        for _ in range(5):  # lost races: try the next candidate
            with self.db.session() as session:
                query = select(Job.id).where(
                    Job.status == S.QUEUED, (Job.retry_at.is_(None)) | (Job.retry_at <= utcnow())
                )
                if max_devices is not None:
                    query = query.where(Job.devices <= max_devices)
                if kinds is not None:
                    query = query.where(Job.kind.in_(kinds))
                candidate = session.scalar(query.order_by(Job.priority.desc(), Job.id).limit(1))
                if candidate is None:
                    return None
                token = uuid.uuid4().hex
                now = utcnow()
                result = session.execute(
                    update(Job)
                    .where(Job.id == candidate, Job.status == S.QUEUED)
                    .values(
                        status=S.RUNNING,
                        worker_id=token,
                        worker_host=host,
                        worker_pid=pid,
                        attempts=Job.attempts + 1,
                        started_at=now,
                        heartbeat_at=now,
                        retry_at=None,
                    )
                )
                if result.rowcount == 1:
                    session.flush()
                    job = session.get(Job, candidate, populate_existing=True)
                    return job, token  # type: ignore[return-value]
        return None

    def set_worker_process(
        self, job_id: int, token: str, host: str, pid: int, devices: list[str] | None = None
    ) -> None:
        values: dict[str, Any] = {"worker_host": host, "worker_pid": pid}
        if devices is not None:
            values["worker_devices"] = ",".join(devices)
        with self.db.session() as session:
            session.execute(update(Job).where(Job.id == job_id, Job.worker_id == token).values(**values))

    # --- workers ------------------------------------------------------------------------------

    def register_worker(
        self,
        worker_id: str,
        host: str,
        pid: int,
        devices: list[str],
        jobs_per_device: int,
        free: int,
        memory: int | None = None,
    ) -> None:
        """Say (again) that a worker lives and what it offers (`memory`: bytes per device for one job);
        submit refuses jobs no live worker can run."""
        with self.db.session() as session:
            worker = session.get(Worker, worker_id)
            if worker is None:
                worker = Worker(id=worker_id, host=host, pid=pid, started_at=utcnow())
                session.add(worker)
            worker.devices, worker.jobs_per_device, worker.free_devices = devices, jobs_per_device, free
            worker.device_memory = memory
            worker.heartbeat_at = utcnow()

    def remove_worker(self, worker_id: str) -> None:
        with self.db.session() as session:
            session.execute(delete(Worker).where(Worker.id == worker_id))

    def live_workers(self, stale_after_s: float = WORKER_STALE_S) -> list[Worker]:
        limit = utcnow() - timedelta(seconds=stale_after_s)
        with self.db.session() as session:
            return list(session.scalars(select(Worker).where(Worker.heartbeat_at >= limit).order_by(Worker.host)))

    def heartbeat(self, job_id: int, token: str, iteration: int | None = None) -> str:
        """Refresh the lease; returns the job's status, or "lost" when another worker holds it now."""
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if iteration is not None:
            values["iteration"] = iteration
        with self.db.session() as session:
            result = session.execute(update(Job).where(Job.id == job_id, Job.worker_id == token).values(**values))
            if result.rowcount != 1:
                return "lost"
            return session.scalar(select(Job.status).where(Job.id == job_id)) or "lost"

    def forget_metrics_after(self, job_id: int, iteration: int) -> None:
        """A resumed job redoes the iterations after its checkpoint: drop what they had stored."""
        with self.db.session() as session:
            session.execute(delete(Metric).where(Metric.job_id == job_id, Metric.iteration > iteration))
            session.execute(delete(Sample).where(Sample.job_id == job_id, Sample.iteration > iteration))
            session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.iteration > iteration))

    def record_iteration(self, job_id: int, token: str, metrics: dict[str, float]) -> bool:
        """Store one iteration's metrics (exactly once per job, iteration and name) and the progress."""
        iteration = int(metrics["iteration"])
        rows = [
            {"job_id": job_id, "iteration": iteration, "name": name, "value": float(value)}
            for name, value in metrics.items()
            if name != "iteration"
        ]
        insert = pg_insert if self.db.engine.dialect.name == "postgresql" else sqlite_insert
        statement = insert(Metric).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=["job_id", "iteration", "name"], set_={"value": statement.excluded.value}
        )
        with self.db.session() as session:
            owned = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker_id == token)
                .values(iteration=iteration, heartbeat_at=utcnow())
            )
            if owned.rowcount != 1:
                return False  # the lease was lost: another worker owns the job now
            session.execute(statement)
        return True

    def record_checkpoint(self, job_id: int, iteration: int, path: str) -> None:
        relative = self.data_dir.relative(path)
        with self.db.session() as session:
            session.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.iteration == iteration))
            session.add(Checkpoint(job_id=job_id, iteration=iteration, path=relative))
            session.execute(update(Job).where(Job.id == job_id).values(last_checkpoint=relative))

    def record_samples(self, job_id: int, iteration: int, grid_path: str, prompts: list[str], seeds: list[int]) -> None:
        relative = self.data_dir.relative(grid_path)
        with self.db.session() as session:
            session.execute(delete(Sample).where(Sample.job_id == job_id, Sample.iteration == iteration))
            session.add_all(
                Sample(job_id=job_id, iteration=iteration, prompt=p, seed=s, image_path=relative)
                for p in prompts
                for s in seeds
            )

    def finish(self, job_id: int, token: str, outcome: str, error: str | None = None) -> str:
        """End a claimed job: done; stopped (-> cancelled or paused as requested); failed (a failure that
        would recur: -> failed now, or cancelled or paused when that was requested meanwhile); error (one
        that may pass: the same, but queued again while attempts remain, to run after a backoff).
        Returns the status it ended in, or "lost" when the job is no longer this claim's.

        One conditional UPDATE decides from the row as it is at that moment, so a cancel or pause that
        lands while the job ends is never overwritten."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome: must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
        requested = ((Job.status == S.CANCELLING, S.CANCELLED), (Job.status == S.PAUSING, S.PAUSED))
        if outcome == "done":
            status: Any = literal(S.DONE)
        elif outcome == "stopped":
            status = case(requested[1], else_=literal(S.CANCELLED))
        elif outcome == "failed":
            status = case(*requested, else_=literal(S.FAILED))
        else:
            status = case(*requested, (Job.attempts < Job.max_attempts, S.QUEUED), else_=literal(S.FAILED))
        values: dict[str, Any] = {
            "status": status,
            "worker_id": None,
            "worker_pid": None,
            "finished_at": case((status.in_(S.FINAL), utcnow()), else_=Job.finished_at),
        }
        if outcome in ("error", "failed"):
            values["error"] = error
        if outcome == "done":  # a run that ended on its time budget is complete at the iteration it reached
            values["total_iterations"] = Job.iteration
        with self.db.session() as session:
            attempts = session.scalar(select(Job.attempts).where(Job.id == job_id, Job.worker_id == token))
            if outcome == "error" and attempts is not None:
                values["retry_at"] = self.retry_time(attempts)
            ended = session.execute(
                update(Job).where(Job.id == job_id, Job.worker_id == token).values(**values).returning(Job.status)
            ).scalar_one_or_none()
        return ended or "lost"

    def retry_time(self, attempts: int) -> datetime:
        """When a job that failed its `attempts`-th attempt for a reason that may pass runs again: the
        backoff doubles with each attempt, up to MAX_RETRY_BACKOFF_S."""
        return utcnow() + timedelta(seconds=min(self.retry_backoff_s * 2 ** max(attempts - 1, 0), MAX_RETRY_BACKOFF_S))

    def requeue_stale(self, timeout_s: float) -> list[int]:
        """Jobs whose worker stopped heartbeating (killed, machine restarted): back to the queue to
        resume from their checkpoint, or failed with the last error after max_attempts."""
        limit = utcnow() - timedelta(seconds=timeout_s)
        requeued = []
        with self.db.session() as session:
            stale = list(
                session.scalars(
                    select(Job).where(Job.status.in_((S.RUNNING, S.CANCELLING, S.PAUSING)), Job.heartbeat_at < limit)
                )
            )
            for job in stale:
                if job.status == S.CANCELLING:
                    new = S.CANCELLED
                elif job.status == S.PAUSING:
                    new = S.PAUSED
                elif job.attempts < job.max_attempts:
                    new = S.QUEUED
                else:
                    new = S.FAILED
                lost = f"worker {job.worker_host}:{job.worker_pid} stopped heartbeating (attempt {job.attempts})"
                result = session.execute(
                    update(Job)
                    .where(Job.id == job.id, Job.worker_id == job.worker_id, Job.status == job.status)
                    .values(
                        status=new,
                        worker_id=None,
                        worker_pid=None,
                        error=f"{lost}; last error: {job.error}"
                        if job.error and new == S.FAILED
                        else (job.error or lost),
                        finished_at=utcnow() if new in S.FINAL else None,
                        retry_at=self.retry_time(job.attempts) if new == S.QUEUED else None,
                    )
                )
                if result.rowcount == 1:
                    requeued.append(job.id)
        return requeued
