"""Devices as resources: what each job takes, and which workers offer how many; inference tasks as jobs;
columns nothing read dropped (jobs.run_dir, checkpoints.evaluation, samples.scores).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as table:
        table.add_column(sa.Column("devices", sa.Integer, nullable=False, server_default="1"))
        table.add_column(sa.Column("worker_devices", sa.String(200)))
        table.add_column(sa.Column("kind", sa.String(20), nullable=False, server_default="train"))
        table.drop_column("run_dir")
    with op.batch_alter_table("checkpoints") as table:
        table.drop_column("evaluation")
    with op.batch_alter_table("samples") as table:
        table.drop_column("scores")
    op.create_table(
        "workers",
        sa.Column("id", sa.String(120), primary_key=True),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("devices", sa.JSON, nullable=False),
        sa.Column("jobs_per_device", sa.Integer, nullable=False),
        sa.Column("free_devices", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workers")
    with op.batch_alter_table("samples") as table:
        table.add_column(sa.Column("scores", sa.JSON, nullable=False, server_default="{}"))
    with op.batch_alter_table("checkpoints") as table:
        table.add_column(sa.Column("evaluation", sa.JSON))
    with op.batch_alter_table("jobs") as table:
        table.add_column(sa.Column("run_dir", sa.String(500)))
        table.drop_column("kind")
        table.drop_column("worker_devices")
        table.drop_column("devices")
