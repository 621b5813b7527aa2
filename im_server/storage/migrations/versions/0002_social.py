"""Profiles, friends, blocks and groups.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("bio", sa.String(500), nullable=False, server_default=""))
        batch.add_column(sa.Column("avatar", sa.String(500), nullable=True))
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("members_version", sa.BigInteger, nullable=False, server_default="0"))
    with op.batch_alter_table("members") as batch:
        batch.add_column(sa.Column("role", sa.String(8), nullable=False, server_default="member"))
        batch.add_column(sa.Column("nickname", sa.String(64), nullable=True))
        batch.add_column(sa.Column("remark", sa.String(64), nullable=True))
        batch.add_column(sa.Column("muted_until", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("left_seq", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("joined_at", sa.BigInteger, nullable=False, server_default="0"))
    op.create_table(
        "friend_requests",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("from_user", sa.BigInteger, nullable=False),
        sa.Column("to_user", sa.BigInteger, nullable=False),
        sa.Column("message", sa.String(200), nullable=False, server_default=""),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_friend_requests"),
        sa.ForeignKeyConstraint(
            ["from_user"], ["users.id"], name="fk_friend_requests_from_user_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["to_user"], ["users.id"], name="fk_friend_requests_to_user_users", ondelete="CASCADE"),
        sa.UniqueConstraint("from_user", "to_user", name="uq_friend_requests_from_user_to_user"),
    )
    op.create_index("ix_friend_requests_to_user_status", "friend_requests", ["to_user", "status"])
    op.create_table(
        "friends",
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("friend_id", sa.BigInteger, nullable=False),
        sa.Column("remark", sa.String(64), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "friend_id", name="pk_friends"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_friends_user_id_users", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["friend_id"], ["users.id"], name="fk_friends_friend_id_users", ondelete="CASCADE"),
    )
    op.create_table(
        "blocks",
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("blocked_id", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "blocked_id", name="pk_blocks"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_blocks_user_id_users", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["blocked_id"], ["users.id"], name="fk_blocks_blocked_id_users", ondelete="CASCADE"),
    )
    op.create_table(
        "groups",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("owner_id", sa.BigInteger, nullable=False),
        sa.Column("join_policy", sa.String(12), nullable=False),
        sa.Column("allow_member_invite", sa.Boolean, nullable=False),
        sa.Column("history_visible", sa.Boolean, nullable=False),
        sa.Column("muted_all", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("announcement", sa.Text, nullable=False, server_default=""),
        sa.Column("announcement_at", sa.BigInteger, nullable=True),
        sa.Column("dissolved", sa.Boolean, nullable=False, server_default="0"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_groups"),
    )
    op.create_table(
        "group_join_requests",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("group_id", sa.BigInteger, nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("message", sa.String(200), nullable=False, server_default=""),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("decided_by", sa.BigInteger, nullable=True),
        sa.Column("decided_at", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_group_join_requests"),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name="fk_group_join_requests_group_id_groups", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_group_join_requests_user_id_users", ondelete="CASCADE"
        ),
        sa.UniqueConstraint("group_id", "user_id", name="uq_group_join_requests_group_id_user_id"),
    )


def downgrade() -> None:
    op.drop_table("group_join_requests")
    op.drop_table("groups")
    op.drop_table("blocks")
    op.drop_table("friends")
    op.drop_index("ix_friend_requests_to_user_status", table_name="friend_requests")
    op.drop_table("friend_requests")
    with op.batch_alter_table("members") as batch:
        for column in ("joined_at", "left_seq", "muted_until", "remark", "nickname", "role"):
            batch.drop_column(column)
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("members_version")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("avatar")
        batch.drop_column("bio")
