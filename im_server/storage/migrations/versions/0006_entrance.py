"""Entrance protection: login failures shared by API nodes, and rotated refresh tokens (reuse detection).

Revision ID: 0006_entrance
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_entrance"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_failure_at", sa.BigInteger, nullable=False),
        sa.Column("wait_until", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("username", name="pk_login_failures"),
    )
    op.create_index("ix_login_failures_last_failure_at", "login_failures", ["last_failure_at"])
    op.create_table(
        "rotated_refresh",
        sa.Column("refresh_hash", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.BigInteger, nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("refresh_hash", name="pk_rotated_refresh"),
    )
    op.create_index("ix_rotated_refresh_expires_at", "rotated_refresh", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_rotated_refresh_expires_at", table_name="rotated_refresh")
    op.drop_table("rotated_refresh")
    op.drop_index("ix_login_failures_last_failure_at", table_name="login_failures")
    op.drop_table("login_failures")
