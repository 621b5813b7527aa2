"""Server configuration: one validated :class:`Settings`, read from ``IM_*`` environment variables.

Build it once at start-up (``Settings()`` reads the environment, keyword arguments override) and pass it
down; nothing in the server reads the environment on its own.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["Settings", "generate_secret"]


def generate_secret() -> str:
    """A fresh random signing key."""
    return secrets.token_urlsafe(48)


class Settings(BaseSettings):
    """Everything a node needs to know; every field is also ``IM_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="IM_", extra="ignore")

    # Infrastructure
    nats_url: str = "nats://127.0.0.1:4222"
    nats_connect_timeout: float = 30.0
    """How long a starting node keeps trying to reach NATS."""
    subject_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = "im"
    """Prefix of every NATS subject and KV bucket, so several clusters can share one NATS."""
    db_url: str = "sqlite+aiosqlite:///im-data/im.db"
    secret_key: SecretStr | None = None
    """Signs access tokens; every API and gateway node of a cluster must share it."""

    # API node
    api_host: str = "127.0.0.1"
    api_port: int = 8080

    # Gateway node
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8081
    gateway_public_url: str | None = None
    """The URL clients use to reach this gateway; ``ws://<host>:<port>/ws`` if unset."""
    node_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    """This gateway's id; a random one if unset. Routes left by a crashed node of the same id are purged."""
    heartbeat_interval: float = 2.0
    node_ttl: float = 10.0
    """A gateway whose heartbeat is older than this is dead; its routes count as offline."""
    auth_timeout: float = 5.0
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    max_frame_bytes: int = 64 * 1024
    gateway_send_lanes: Annotated[int, Field(ge=1, le=64)] = 2
    """Requests a gateway keeps in flight to the message service (each carries a batch of sends)."""
    connect_rate: float = 50.0
    """New connections per second accepted from one IP address (sustained)."""
    connect_burst: int = 200

    # Auth
    access_token_ttl: int = 3600
    """Seconds an access token is valid; also how long a logout's revocation is kept."""
    refresh_token_ttl: int = 30 * 24 * 3600
    max_devices: Annotated[int, Field(ge=1, le=1000)] = 10
    """Devices one account may be logged in on at once; a login from one more is refused."""
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 64 * 1024
    """KiB."""
    argon2_parallelism: int = 2

    # Messaging
    dm_requires_friendship: bool = True
    """Direct messages need friendship (messages to and from bot accounts are exempt)."""
    group_member_limit: Annotated[int, Field(ge=2)] = 10_000
    recall_window: float = 120.0
    """Seconds during which senders may recall their messages (group owners and admins: always)."""
    edit_window: float = 3600.0
    """Seconds during which senders may edit their messages."""
    typing_interval: float = 2.0
    """At most one typing notice per user and conversation this often (a stop always goes through)."""
    typing_max_group: int = 500
    """Typing is not shown in groups larger than this."""
    max_text_len: Annotated[int, Field(ge=1, le=16_000)] = 4000
    max_body_bytes: int = 256 * 1024
    commit_max_batch: int = 1024
    """The most sends written in one group-commit transaction."""
    send_rate: float = 20.0
    """Messages per second one user may send (sustained), per API node."""
    send_burst: int = 100

    # Consent in groups (see docs/protocol.md, "Invitations")
    group_invites_default: Literal["everyone", "friends", "nobody"] = "friends"
    """Who may add a user to a group directly until the user chooses (``PATCH /v1/me/privacy``)."""
    group_invitation_ttl: Annotated[float, Field(gt=0)] = 7 * 24 * 3600.0
    """Seconds a pending group invitation waits for its answer."""
    group_invitation_cooldown: Annotated[float, Field(ge=0)] = 24 * 3600.0
    """Seconds after a decline during which the same group cannot invite the same user again."""
    group_creates_per_day: Annotated[int, Field(ge=1)] = 50
    """Groups one user may create in any 24 hours."""
    group_invites_per_hour: Annotated[int, Field(ge=1)] = 500
    """Users one user may add or invite to groups in any hour (group creation included)."""

    # Files (see docs/operations.md)
    blob_store: Literal["nats", "s3"] = "nats"
    """Where uploaded files live: the NATS JetStream object store ``<prefix>_files``, or an S3 bucket."""
    blob_replicas: Annotated[int, Field(ge=1, le=5)] = 1
    """Replicas of the object store bucket when a node creates it (a clustered NATS wants 3)."""
    blob_chunk_size: Annotated[int, Field(ge=16 * 1024, le=1024 * 1024)] = 128 * 1024
    """Bytes per JetStream message of a stored blob (under the server's ``max_payload``)."""
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    """An S3-compatible endpoint (MinIO: ``http://host:9000``); unset for AWS S3."""
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    """Unset both keys to use the usual AWS credential chain (environment, profile, instance role)."""
    s3_key_prefix: str | None = None
    """Prefix of every object key; ``<subject prefix>/files/`` if unset."""
    upload_dir: Path | None = None
    """Where uploads are spooled while they arrive; a directory under the system's temporary one if unset."""
    max_image_bytes: Annotated[int, Field(ge=1)] = 20 * 1024 * 1024
    max_file_bytes: Annotated[int, Field(ge=1)] = 100 * 1024 * 1024
    max_voice_bytes: Annotated[int, Field(ge=1)] = 20 * 1024 * 1024
    max_video_bytes: Annotated[int, Field(ge=1)] = 200 * 1024 * 1024
    max_image_pixels: Annotated[int, Field(ge=1)] = 50_000_000
    """Larger pictures are refused before they are decoded (decompression bombs)."""
    thumbnail_size: Annotated[int, Field(ge=32, le=2048)] = 320
    """The longer side of image thumbnails, in pixels."""
    refused_types: Annotated[list[str], NoDecode] = [
        "application/vnd.microsoft.portable-executable",
        "application/x-elf",
        "application/x-mach-binary",
        "application/java-archive",
        "application/vnd.android.package-archive",
    ]
    """Media types (as read from the bytes) refused for every kind; comma-separated in the environment."""
    refused_extensions: Annotated[list[str], NoDecode] = [
        ".exe", ".com", ".scr", ".pif", ".bat", ".cmd", ".msi", ".msp", ".cpl", ".dll", ".hta",
        ".vbs", ".vbe", ".jse", ".wsf", ".wsh", ".ps1", ".lnk", ".reg", ".jar", ".apk",
    ]  # fmt: skip
    """File name extensions refused whatever the bytes are; comma-separated in the environment."""

    @field_validator("refused_types", "refused_extensions", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip().lower() for item in value.split(",") if item.strip()]
        return value

    @field_validator("refused_extensions")
    @classmethod
    def _dotted(cls, value: list[str]) -> list[str]:
        return [item.lower() if item.startswith(".") else f".{item.lower()}" for item in value]

    def max_upload_bytes(self, kind: str) -> int:
        """The largest upload of a kind (``image``, ``file``, ``voice``, ``video``)."""
        limits = {
            "image": self.max_image_bytes,
            "file": self.max_file_bytes,
            "voice": self.max_voice_bytes,
            "video": self.max_video_bytes,
        }
        return limits[kind]

    @field_validator("db_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if value.startswith("sqlite:///"):
            value = "sqlite+aiosqlite:///" + value.removeprefix("sqlite:///")
        elif value.startswith(("postgresql://", "postgres://")):
            value = "postgresql+asyncpg://" + value.split("://", 1)[1]
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("IM_DB_URL must be a sqlite:/// or postgresql:// URL")
        return value

    def signing_key(self) -> bytes:
        """The token signing key; refuses to run without one."""
        if self.secret_key is None or len(self.secret_key.get_secret_value()) < 16:
            raise ValueError("IM_SECRET_KEY must be set (at least 16 characters) and shared by all nodes")
        return self.secret_key.get_secret_value().encode()

    @property
    def ws_url(self) -> str:
        """Where clients connect to this gateway."""
        return self.gateway_public_url or f"ws://{self.gateway_host}:{self.gateway_port}/ws"
