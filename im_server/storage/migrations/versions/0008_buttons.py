"""Quick-reply button presses kept for their recipients, and the commands accounts declare.

Revision ID: 0008_buttons
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_buttons"
down_revision = "0001"
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "button_presses",
        sa.Column("id", _Id, primary_key=True, autoincrement=True),
        sa.Column("recipient_id", sa.BigInteger, nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("conversation_id", sa.String(48), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("button", sa.String(64), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_button_presses"),
        sa.ForeignKeyConstraint(
            ["recipient_id"], ["users.id"], name="fk_button_presses_recipient_id_users", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_button_presses_user_id_users", ondelete="CASCADE"),
        sa.UniqueConstraint(
            "user_id", "conversation_id", "seq", "button", name="uq_button_presses_user_id_conversation_id_seq_button"
        ),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_button_presses_recipient_id_id", "button_presses", ["recipient_id", "id"])
    op.create_table(
        "user_commands",
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("commands", sa.Text, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_user_commands"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_user_commands_user_id_users", ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("user_commands")
    op.drop_index("ix_button_presses_recipient_id_id", table_name="button_presses")
    op.drop_table("button_presses")
