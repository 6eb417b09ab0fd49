"""Initial schema: jobs, metrics, samples, checkpoints, exports, preference labels.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _when(name: str, **kwargs: object) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), **kwargs)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        _when("created_at", nullable=False),
        _when("started_at"),
        _when("finished_at"),
        _when("heartbeat_at"),
        sa.Column("worker_id", sa.String(120)),
        sa.Column("worker_pid", sa.Integer),
        sa.Column("worker_host", sa.String(200)),
        sa.Column("error", sa.Text),
        sa.Column("iteration", sa.Integer, nullable=False),
        sa.Column("total_iterations", sa.Integer, nullable=False),
        sa.Column("last_checkpoint", sa.String(500)),
        sa.Column("run_dir", sa.String(500)),
    )
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.create_index("ix_jobs_created_at", "jobs", ["created_at"])
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("iteration", sa.Integer, nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.UniqueConstraint("job_id", "iteration", "name", name="uq_metric_job_iteration_name"),
    )
    op.create_index("ix_metrics_job_id", "metrics", ["job_id"])
    op.create_table(
        "samples",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("iteration", sa.Integer, nullable=False),
        sa.Column("prompt", sa.String(500), nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("image_path", sa.String(500), nullable=False),
        sa.Column("scores", sa.JSON, nullable=False),
    )
    op.create_index("ix_samples_job_id", "samples", ["job_id"])
    op.create_table(
        "checkpoints",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("iteration", sa.Integer, nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("evaluation", sa.JSON),
        _when("created_at", nullable=False),
        sa.UniqueConstraint("job_id", "iteration", name="uq_checkpoint_job_iteration"),
    )
    op.create_index("ix_checkpoints_job_id", "checkpoints", ["job_id"])
    op.create_table(
        "exports",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("checkpoint_id", sa.Integer, sa.ForeignKey("checkpoints.id", ondelete="CASCADE"), nullable=False),
        sa.Column("format", sa.String(20), nullable=False),
        sa.Column("path", sa.String(500), nullable=False),
        sa.Column("extra", sa.JSON, nullable=False),
        _when("created_at", nullable=False),
    )
    op.create_index("ix_exports_checkpoint_id", "exports", ["checkpoint_id"])
    op.create_table(
        "preference_labels",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("prompt", sa.String(500), nullable=False),
        sa.Column("image_a", sa.String(500), nullable=False),
        sa.Column("image_b", sa.String(500), nullable=False),
        sa.Column("choice", sa.String(10), nullable=False),
        sa.Column("labeler", sa.String(120), nullable=False),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="SET NULL")),
        _when("created_at", nullable=False),
    )
    op.create_index("ix_preference_labels_job_id", "preference_labels", ["job_id"])


def downgrade() -> None:
    for table in ("preference_labels", "exports", "checkpoints", "samples", "metrics", "jobs"):
        op.drop_table(table)
