"""Preference labels carry what made their pair: seeds, checkpoints, model, iteration, session.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("preference_labels") as table:
        table.add_column(sa.Column("seed_a", sa.Integer))
        table.add_column(sa.Column("seed_b", sa.Integer))
        table.add_column(sa.Column("checkpoint_a", sa.Integer))
        table.add_column(sa.Column("checkpoint_b", sa.Integer))
        table.add_column(sa.Column("model", sa.String(500)))
        table.add_column(sa.Column("iteration", sa.Integer))
        table.add_column(sa.Column("session_id", sa.String(64)))
        table.create_foreign_key(
            "fk_preference_labels_checkpoint_a", "checkpoints", ["checkpoint_a"], ["id"], ondelete="SET NULL"
        )
        table.create_foreign_key(
            "fk_preference_labels_checkpoint_b", "checkpoints", ["checkpoint_b"], ["id"], ondelete="SET NULL"
        )
        table.create_index("ix_preference_labels_session_id", ["session_id"])
        table.create_index("ix_preference_labels_created_at", ["created_at"])


def downgrade() -> None:
    with op.batch_alter_table("preference_labels") as table:
        table.drop_index("ix_preference_labels_created_at")
        table.drop_index("ix_preference_labels_session_id")
        table.drop_constraint("fk_preference_labels_checkpoint_b", type_="foreignkey")
        table.drop_constraint("fk_preference_labels_checkpoint_a", type_="foreignkey")
        for column in ("session_id", "iteration", "model", "checkpoint_b", "checkpoint_a", "seed_b", "seed_a"):
            table.drop_column(column)
