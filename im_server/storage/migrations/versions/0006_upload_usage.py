"""Bytes each user uploaded per UTC day, for the upload quota.

Revision ID: 0006_upload_usage
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_upload_usage"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "upload_usage",
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("day", sa.Integer, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "day", name="pk_upload_usage"),
    )


def downgrade() -> None:
    op.drop_table("upload_usage")
