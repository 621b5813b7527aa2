"""Blobs of media messages: what was read from them, who uploaded them, where they were shared.

Revision ID: 0003
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("media_type", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("width", sa.Integer, nullable=True),
        sa.Column("height", sa.Integer, nullable=True),
        sa.Column("duration_ms", sa.BigInteger, nullable=True),
        sa.Column("thumbnail", sa.String(64), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_blobs"),
    )
    op.create_table(
        "blob_owners",
        sa.Column("blob_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("blob_id", "user_id", name="pk_blob_owners"),
        sa.ForeignKeyConstraint(["blob_id"], ["blobs.id"], name="fk_blob_owners_blob_id_blobs", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_blob_owners_user_id_users", ondelete="CASCADE"),
    )
    op.create_table(
        "blob_shares",
        sa.Column("blob_id", sa.String(64), nullable=False),
        sa.Column("conversation_id", sa.String(48), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("blob_id", "conversation_id", "seq", name="pk_blob_shares"),
        sa.ForeignKeyConstraint(["blob_id"], ["blobs.id"], name="fk_blob_shares_blob_id_blobs", ondelete="CASCADE"),
    )


def downgrade() -> None:
    op.drop_table("blob_shares")
    op.drop_table("blob_owners")
    op.drop_table("blobs")
