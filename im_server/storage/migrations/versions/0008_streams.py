"""Streaming messages: the streams still open.

Revision ID: 0008_streams
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_streams"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "streams",
        sa.Column("conversation_id", sa.String(48), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("sender_id", sa.BigInteger, nullable=False),
        sa.Column("opened_at", sa.BigInteger, nullable=False),
        sa.Column("touched_at", sa.BigInteger, nullable=False),
        sa.Column("length", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "seq", name="pk_streams"),
    )
    op.create_index("ix_streams_sender_id", "streams", ["sender_id"])
    op.create_index("ix_streams_touched_at", "streams", ["touched_at"])


def downgrade() -> None:
    op.drop_index("ix_streams_touched_at", table_name="streams")
    op.drop_index("ix_streams_sender_id", table_name="streams")
    op.drop_table("streams")
