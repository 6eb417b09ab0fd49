"""The studio's tables (SQLAlchemy 2 declarative). Schema changes go through Alembic migrations
in `storage/migrations`, never through `create_all` on a live database."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class JobStatus:
    """A job's life: queued -> running -> done | failed | cancelled; paused waits outside the queue.

    `cancelling` and `pausing` are requests a running worker honours at its next iteration boundary.
    """

    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"
    PAUSING = "pausing"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    FINAL = (DONE, FAILED, CANCELLED)
    ALL = (QUEUED, RUNNING, CANCELLING, PAUSING, PAUSED, DONE, FAILED, CANCELLED)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    config: Mapped[dict] = mapped_column(JSON)  # the validated TrainConfig as a plain dict
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.QUEUED, index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)  # higher runs first
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    worker_id: Mapped[str | None] = mapped_column(String(120))  # the claim's lease token
    worker_pid: Mapped[int | None] = mapped_column(Integer)  # the process running the job
    worker_host: Mapped[str | None] = mapped_column(String(200))
    error: Mapped[str | None] = mapped_column(Text)
    iteration: Mapped[int] = mapped_column(Integer, default=0)  # iterations done
    total_iterations: Mapped[int] = mapped_column(Integer, default=0)
    last_checkpoint: Mapped[str | None] = mapped_column(String(500))  # relative to the data directory
    devices: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # the config's resources.devices
    worker_devices: Mapped[str | None] = mapped_column(String(200))  # what its worker gave it: "cuda:0,cuda:1"
    # train, or a short inference task run by a worker for the web app (compare, generate)
    kind: Mapped[str] = mapped_column(String(20), default="train", server_default="train")
    memory_estimate: Mapped[int | None] = mapped_column(BigInteger)  # peak bytes per device, estimated at submit
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # a retried job waits until then


class Worker(Base):
    """A scheduler process that runs jobs: what devices it offers, refreshed while it lives."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(120), primary_key=True)  # host:pid:start
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    devices: Mapped[list] = mapped_column(JSON)  # ["cuda:0", "cuda:1"] or ["cpu:0", ...]
    jobs_per_device: Mapped[int] = mapped_column(Integer)
    free_devices: Mapped[int] = mapped_column(Integer)  # devices with room for one more job
    device_memory: Mapped[int | None] = mapped_column(BigInteger)  # bytes of the smallest of its devices
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Metric(Base):
    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("job_id", "iteration", "name", name="uq_metric_job_iteration_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    iteration: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[float] = mapped_column(Float)


class Sample(Base):
    """One image of a sample grid: the grid PNG is stored once, each row names its cell."""

    __tablename__ = "samples"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    iteration: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(String(500))
    seed: Mapped[int] = mapped_column(Integer)
    image_path: Mapped[str] = mapped_column(String(500))  # relative to the data directory


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "iteration", name="uq_checkpoint_job_iteration"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    iteration: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(String(500))  # relative to the data directory
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Export(Base):
    __tablename__ = "exports"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id", ondelete="CASCADE"), index=True)
    format: Mapped[str] = mapped_column(String(20))  # kohya | peft
    path: Mapped[str] = mapped_column(String(500))  # relative to the data directory
    extra: Mapped[dict] = mapped_column(JSON, default=dict)  # the file's metadata
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PreferenceLabel(Base):
    """A person's choice between two images of one prompt, and what made the two images."""

    __tablename__ = "preference_labels"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prompt: Mapped[str] = mapped_column(String(500))
    image_a: Mapped[str] = mapped_column(String(500))  # relative to the data directory, content-addressed
    image_b: Mapped[str] = mapped_column(String(500))
    choice: Mapped[str] = mapped_column(String(10))  # a | b | tie
    labeler: Mapped[str] = mapped_column(String(120), default="")
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    seed_a: Mapped[int | None] = mapped_column(Integer)
    seed_b: Mapped[int | None] = mapped_column(Integer)
    # the checkpoint each image came from; None is the base model (or an imported image)
    checkpoint_a: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id", ondelete="SET NULL"))
    checkpoint_b: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id", ondelete="SET NULL"))
    model: Mapped[str | None] = mapped_column(String(500))  # the base model's name
    iteration: Mapped[int | None] = mapped_column(Integer)  # a job's sample-grid iteration the pair came from
    session_id: Mapped[str | None] = mapped_column(String(64), index=True)  # the labelling session
