"""Admission and retries: each job's estimated peak memory, when a retried job may run again, and how much
memory each worker's devices have.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as table:
        table.add_column(sa.Column("memory_estimate", sa.BigInteger))
        table.add_column(sa.Column("retry_at", sa.DateTime(timezone=True)))
    with op.batch_alter_table("workers") as table:
        table.add_column(sa.Column("device_memory", sa.BigInteger))


def downgrade() -> None:
    with op.batch_alter_table("workers") as table:
        table.drop_column("device_memory")
    with op.batch_alter_table("jobs") as table:
        table.drop_column("retry_at")
        table.drop_column("memory_estimate")
