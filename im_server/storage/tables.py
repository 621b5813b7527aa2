"""Table definitions (SQLAlchemy Core). Only :mod:`im_server.storage` touches them.

Times are integer milliseconds since the epoch, UTC.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

__all__ = ["conversations", "devices", "members", "messages", "metadata", "users"]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# SQLite only auto-increments an INTEGER PRIMARY KEY.
_Id = BigInteger().with_variant(Integer(), "sqlite")

users = Table(
    "users",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("username", String(32), nullable=False, unique=True),
    Column("password_hash", String(256), nullable=False),
    Column("display_name", String(64), nullable=False),
    Column("is_bot", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger, nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("session_id", String(32), nullable=False),
    Column("refresh_hash", String(64), nullable=False, unique=True),
    Column("refresh_expires_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("last_seen_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "device_id"),
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(48), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("max_seq", BigInteger, nullable=False, default=0),
    Column("created_at", BigInteger, nullable=False),
    Column("last_at", BigInteger, nullable=False),
)

members = Table(
    "members",
    metadata,
    Column("conversation_id", String(48), ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("read_seq", BigInteger, nullable=False, default=0),
    Column("joined_seq", BigInteger, nullable=False, default=0),
    Column("updated_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("conversation_id", "user_id"),
    Index(None, "user_id"),
)

messages = Table(
    "messages",
    metadata,
    Column("conversation_id", String(48), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("sender_id", BigInteger, nullable=False),
    Column("client_msg_id", String(64), nullable=True),
    Column("body", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("conversation_id", "seq"),
    UniqueConstraint("sender_id", "client_msg_id"),
)
