"""Consent in groups: invitations that wait for an answer, the "who can add me" setting, group creators.

Revision ID: 0006_consent
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_consent"
down_revision = "0002"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("groups") as batch:
        batch.add_column(sa.Column("creator_id", sa.BigInteger, nullable=True))
    op.execute("UPDATE groups SET creator_id = owner_id")
    op.create_index("ix_groups_creator_id_created_at", "groups", ["creator_id", "created_at"])
    op.create_table(
        "group_invitations",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("group_id", sa.BigInteger, nullable=False),
        sa.Column("inviter_id", sa.BigInteger, nullable=False),
        sa.Column("invitee_id", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("decided_at", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_group_invitations"),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name="fk_group_invitations_group_id_groups", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["inviter_id"], ["users.id"], name="fk_group_invitations_inviter_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["invitee_id"], ["users.id"], name="fk_group_invitations_invitee_id_users", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_group_invitations_invitee_id_status", "group_invitations", ["invitee_id", "status"])
    op.create_index("ix_group_invitations_group_id_status", "group_invitations", ["group_id", "status"])
    op.create_index("ix_group_invitations_inviter_id_created_at", "group_invitations", ["inviter_id", "created_at"])
    op.create_table(
        "user_privacy",
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("group_invites", sa.String(8), nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_user_privacy"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_user_privacy_user_id_users", ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("user_privacy")
    op.drop_index("ix_group_invitations_inviter_id_created_at", table_name="group_invitations")
    op.drop_index("ix_group_invitations_group_id_status", table_name="group_invitations")
    op.drop_index("ix_group_invitations_invitee_id_status", table_name="group_invitations")
    op.drop_table("group_invitations")
    op.drop_index("ix_groups_creator_id_created_at", table_name="groups")
    with op.batch_alter_table("groups") as batch:
        batch.drop_column("creator_id")
