"""Message kinds for exact unread counts, replies, mentions and edits.

Revision ID: 0005
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="text"))
        batch.add_column(sa.Column("reply_to", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("meta", sa.Text, nullable=True))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("UPDATE messages SET kind = COALESCE(body::json->>'kind', 'text')")
    else:
        op.execute("UPDATE messages SET kind = COALESCE(json_extract(body, '$.kind'), 'text')")
    op.create_table(
        "mentions",
        sa.Column("conversation_id", sa.String(48), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "seq", "user_id", name="pk_mentions"),
    )


def downgrade() -> None:
    op.drop_table("mentions")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("meta")
        batch.drop_column("reply_to")
        batch.drop_column("kind")
