"""Cluster administration: admins, disabled accounts, and bot tokens.

Revision ID: 0007_admin
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_admin"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("disabled_at", sa.BigInteger, nullable=True))
    op.create_table(
        "bot_tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("token_hash", name="pk_bot_tokens"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_bot_tokens_user_id_users", ondelete="CASCADE"),
    )
    op.create_index("ix_bot_tokens_user_id", "bot_tokens", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_bot_tokens_user_id", table_name="bot_tokens")
    op.drop_table("bot_tokens")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("disabled_at")
        batch.drop_column("is_admin")
