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

__all__ = [
    "blocks",
    "bot_tokens",
    "button_presses",
    "conversations",
    "devices",
    "friend_requests",
    "friends",
    "group_invitations",
    "group_join_requests",
    "groups",
    "login_failures",
    "members",
    "mentions",
    "messages",
    "metadata",
    "revoked_sessions",
    "rotated_refresh",
    "user_commands",
    "user_privacy",
    "users",
]

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
    Column("bio", String(500), nullable=False, server_default=""),
    Column("avatar", String(500), nullable=True),
    Column("is_bot", Boolean, nullable=False, default=False),
    Column("created_at", BigInteger, nullable=False),
    # Cluster administration (migration 0007_admin): admins use /v1/admin; a disabled user cannot log in.
    Column("is_admin", Boolean, nullable=False, server_default="0"),
    Column("disabled_at", BigInteger, nullable=True),
)

bot_tokens = Table(
    "bot_tokens",
    metadata,
    # A bot logs in with its token (only its SHA-256 is kept); revoking a bot deletes its rows.
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "user_id"),
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

revoked_sessions = Table(
    "revoked_sessions",
    metadata,
    # Device sessions ended (logout, or a new login of the same device) while access tokens issued for
    # them may still be valid. Nodes refuse those tokens through the <prefix>_revoked KV bucket; these
    # rows put entries back into the bucket if NATS lost it. Kept until no such token can be valid.
    Column("session_id", String(32), primary_key=True),
    Column("user_id", BigInteger, nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index(None, "expires_at"),
)

conversations = Table(
    "conversations",
    metadata,
    Column("id", String(48), primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("max_seq", BigInteger, nullable=False, default=0),
    Column("created_at", BigInteger, nullable=False),
    Column("last_at", BigInteger, nullable=False),
    Column("members_version", BigInteger, nullable=False, server_default="0"),
    # Bumped by every membership change, in the same transaction; commits return it so that delivery
    # can tell whether its cached member list predates the message.
)

members = Table(
    "members",
    metadata,
    Column("conversation_id", String(48), ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("read_seq", BigInteger, nullable=False, default=0),
    Column("joined_seq", BigInteger, nullable=False, default=0),
    Column("updated_at", BigInteger, nullable=False),
    Column("role", String(8), nullable=False, server_default="member"),
    Column("nickname", String(64), nullable=True),
    Column("remark", String(64), nullable=True),
    Column("muted_until", BigInteger, nullable=True),
    Column("left_seq", BigInteger, nullable=True),
    # NULL while a member; the seq of the leave (or kick) system message once gone: history stays
    # readable up to it and nothing after it is delivered.
    Column("joined_at", BigInteger, nullable=False, server_default="0"),
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
    Column("kind", String(16), nullable=False, server_default="text"),
    # The content's kind, for counting: system messages and recalled ones do not count as unread.
    Column("reply_to", BigInteger, nullable=True),
    Column("meta", Text, nullable=True),
    # JSON: the reply preview, mentions, when it was edited.
    PrimaryKeyConstraint("conversation_id", "seq"),
    UniqueConstraint("sender_id", "client_msg_id"),
)

mentions = Table(
    "mentions",
    metadata,
    Column("conversation_id", String(48), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("user_id", BigInteger, nullable=False),
    # 0 stands for @all.
    PrimaryKeyConstraint("conversation_id", "seq", "user_id"),
)

friend_requests = Table(
    "friend_requests",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("from_user", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("to_user", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("message", String(200), nullable=False, server_default=""),
    Column("status", String(10), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("from_user", "to_user"),
    Index(None, "to_user", "status"),
)

friends = Table(
    "friends",
    metadata,
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("friend_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("remark", String(64), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "friend_id"),
)

blocks = Table(
    "blocks",
    metadata,
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("blocked_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("user_id", "blocked_id"),
)

groups = Table(
    "groups",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False),
    Column("owner_id", BigInteger, nullable=False),
    Column("join_policy", String(12), nullable=False),
    Column("allow_member_invite", Boolean, nullable=False),
    Column("history_visible", Boolean, nullable=False),
    Column("muted_all", Boolean, nullable=False, server_default="0"),
    Column("announcement", Text, nullable=False, server_default=""),
    Column("announcement_at", BigInteger, nullable=True),
    Column("dissolved", Boolean, nullable=False, server_default="0"),
    Column("created_at", BigInteger, nullable=False),
    Column("creator_id", BigInteger, nullable=True),
    # Who created the group (the owner may change); counts creations against the daily limit.
    Index(None, "creator_id", "created_at"),
)

group_join_requests = Table(
    "group_join_requests",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("group_id", BigInteger, ForeignKey("groups.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("message", String(200), nullable=False, server_default=""),
    Column("status", String(10), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("decided_by", BigInteger, nullable=True),
    Column("decided_at", BigInteger, nullable=True),
    UniqueConstraint("group_id", "user_id"),
)

group_invitations = Table(
    "group_invitations",
    metadata,
    # Every user an account put into a group: invitations waiting for an answer (``pending``) and direct
    # adds (``accepted`` at once), so that the hourly limit counts both. At most one ``pending`` row per
    # group and invitee (kept so by the transactions, which lock the group's row).
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("group_id", BigInteger, ForeignKey("groups.id", ondelete="CASCADE"), nullable=False),
    Column("inviter_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("invitee_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("status", String(10), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("decided_at", BigInteger, nullable=True),
    Index(None, "invitee_id", "status"),
    Index(None, "group_id", "status"),
    Index(None, "inviter_id", "created_at"),
)

user_privacy = Table(
    "user_privacy",
    metadata,
    # One row per user who changed a setting; the server's defaults apply to everyone else.
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("group_invites", String(8), nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)

login_failures = Table(
    "login_failures",
    metadata,
    # Wrong passwords given for a username (known or not, so that throttling tells nothing about which
    # names exist), shared by every API node. A success removes the row; rows idle past the failure TTL
    # are removed by the next failure written.
    Column("username", String(64), primary_key=True),
    Column("failures", Integer, nullable=False),
    Column("last_failure_at", BigInteger, nullable=False),
    Column("wait_until", BigInteger, nullable=False),
    Index(None, "last_failure_at"),
)

rotated_refresh = Table(
    "rotated_refresh",
    metadata,
    # Refresh tokens already swapped for new ones. Presenting one again means the token family leaked:
    # the session is ended. Kept until the token would have expired anyway.
    Column("refresh_hash", String(64), primary_key=True),
    Column("session_id", String(32), nullable=False),
    Column("user_id", BigInteger, nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Index(None, "expires_at"),
)

button_presses = Table(
    "button_presses",
    metadata,
    # Presses of a message's quick-reply buttons, kept for the message's sender (``recipient_id``) until
    # it acknowledges them (the row is then deleted) or they lapse. At most one row per presser, message
    # and button: pressing again while unacknowledged is the same press.
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("recipient_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("conversation_id", String(48), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("button", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    UniqueConstraint("user_id", "conversation_id", "seq", "button"),
    Index(None, "recipient_id", "id"),
    # Ids are never reused (SQLite would reuse the highest after a delete): a bot derives the send ids
    # of a press's handler from its id.
    sqlite_autoincrement=True,
)

user_commands = Table(
    "user_commands",
    metadata,
    # The commands an account (a bot) declared, as the JSON list of ``BotCommand`` it sent.
    Column("user_id", BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("commands", Text, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
)
