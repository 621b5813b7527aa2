"""Users, devices, conversations, members and messages.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("username", sa.String(32), nullable=False),
        sa.Column("password_hash", sa.String(256), nullable=False),
        sa.Column("display_name", sa.String(64), nullable=False),
        sa.Column("is_bot", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "devices",
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("refresh_hash", sa.String(64), nullable=False),
        sa.Column("refresh_expires_at", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("last_seen_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "device_id", name="pk_devices"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_devices_user_id_users", ondelete="CASCADE"),
        sa.UniqueConstraint("refresh_hash", name="uq_devices_refresh_hash"),
    )
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(48), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("max_seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("last_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_conversations"),
    )
    op.create_table(
        "members",
        sa.Column("conversation_id", sa.String(48), nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("read_seq", sa.BigInteger, nullable=False),
        sa.Column("joined_seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "user_id", name="pk_members"),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversations.id"],
            name="fk_members_conversation_id_conversations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_members_user_id_users", ondelete="CASCADE"),
    )
    op.create_index("ix_members_user_id", "members", ["user_id"])
    op.create_table(
        "messages",
        sa.Column("conversation_id", sa.String(48), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("sender_id", sa.BigInteger, nullable=False),
        sa.Column("client_msg_id", sa.String(64), nullable=True),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("conversation_id", "seq", name="pk_messages"),
        sa.UniqueConstraint("sender_id", "client_msg_id", name="uq_messages_sender_id_client_msg_id"),
    )


def downgrade() -> None:
    op.drop_table("messages")
    op.drop_index("ix_members_user_id", table_name="members")
    op.drop_table("members")
    op.drop_table("conversations")
    op.drop_table("devices")
    op.drop_table("users")
