"""Server configuration: one validated :class:`Settings`, read from ``IM_*`` environment variables.

Build it once at start-up (``Settings()`` reads the environment, keyword arguments override) and pass it
down; nothing in the server reads the environment on its own.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
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
    """The NATS server, or several servers of one NATS cluster, comma-separated
    (``nats://n1:4222,nats://n2:4222,nats://n3:4222``). They are tried in the order given (put the
    server on the node's own machine first); on a disconnect the node goes on to the next one, and
    to servers the cluster announces."""
    nats_replicas: Annotated[int, Field(ge=1, le=5)] = 1
    """Replicas of every JetStream bucket a node creates (registries, revocations, access lists, files):
    1 for a single NATS server, 3 for a cluster of three (a bucket then survives one server down).
    Buckets that already exist keep their replica count (``nats stream edit`` changes it)."""
    nats_connect_timeout: float = 30.0
    """How long a starting node keeps trying to reach NATS."""
    nats_ping_interval: Annotated[float, Field(gt=0)] = 1.0
    """Seconds between the pings a node sends NATS (the client's default is two minutes)."""
    nats_max_outstanding_pings: Annotated[int, Field(ge=1)] = 3
    """Pings left unanswered before a node drops its NATS connection as dead and reconnects: a link
    that died without a reset (a frozen server, a lost network) is noticed within about
    ``nats_ping_interval * (nats_max_outstanding_pings + 1)`` seconds."""
    nats_monitor_url: str | None = None
    """The NATS server's monitoring endpoint (``http://host:8222``): ``im cluster stats`` shows its figures."""
    # NATS credentials of this node's role (docs/security.md); set at most one of user, nkey, creds.
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    nats_nkey_seed_file: Path | None = None
    """A file holding this node's nkey seed (``SU...``); ``im server up`` writes one per node."""
    nats_creds_file: Path | None = None
    """A ``.creds`` file (user JWT and seed) for a NATS run in operator/JWT mode."""
    nats_tls_ca_file: Path | None = None
    """Verify the NATS server against this CA; setting any TLS option (or a ``tls://`` URL) turns TLS on."""
    nats_tls_cert_file: Path | None = None
    """Client certificate for NATS servers that require one (with ``nats_tls_key_file``)."""
    nats_tls_key_file: Path | None = None
    subject_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = "im"
    """Prefix of every NATS subject and KV bucket, so several clusters can share one NATS."""
    db_url: str = "sqlite+aiosqlite:///im-data/im.db"
    secret_key: SecretStr | None = None
    """Signs access tokens; every API and gateway node of a cluster must share it."""

    # API node
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    api_reuse_port: bool = False
    """Bind the API port with ``SO_REUSEPORT`` (Linux): several API processes of one machine share it
    and the kernel spreads new connections over them (``im server up --apis N``)."""

    # Gateway node
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8081
    gateway_public_url: str | None = None
    """The URL clients use to reach this gateway; ``ws://<host>:<port>/ws`` if unset."""
    node_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")] | None = None
    """This gateway's id; a random one if unset. Routes left by a crashed node of the same id are purged."""
    heartbeat_interval: float = 0.5
    node_ttl: float = 3.0
    """A node whose heartbeat is older than this is dead: no longer assigned, and its routes are removed.
    A killed gateway is known dead sooner, by the probe of a late heartbeat (``RouteReaper``); the TTL is
    what a busy node may be late by before it is judged dead (on a starved core, 1.5 s was not enough:
    a live gateway was judged dead, pushes to it held back and its clients made to resync)."""
    auth_timeout: float = 5.0
    ws_ping_interval: float = 30.0
    """Seconds between a gateway's pings of each quiet connection (0: none): as often as the proxies in
    front need to keep an idle connection open (60 s idle timeouts are common), and no more. A connection
    heard from within half this time is not pinged."""
    ws_ping_timeout: float = 20.0
    """Seconds a ping may go unanswered (nothing heard from the peer since); the connection is closed
    when its next turn finds it so."""
    max_frame_bytes: int = 64 * 1024
    gateway_send_lanes: Annotated[int, Field(ge=1, le=64)] = 8
    """Requests a gateway keeps in flight to the message service (each carries a batch of sends; a
    connection's sends are in one request at a time, so that they keep their order)."""
    gateway_max_queue_wait: Annotated[float, Field(gt=0)] = 2.0
    """Seconds the oldest send waiting for a free request may have waited before a gateway refuses new sends
    with ``unavailable`` and a ``retry_after`` (every request in flight and the message service behind)."""
    gateway_forward_timeout: Annotated[float, Field(gt=0)] = 0.5
    """Seconds a gateway waits for one API node to answer a batch of sends before retrying it (same
    ``client_msg_id`` values, so a retry that reaches another node cannot store a message twice)."""
    gateway_forward_deadline: Annotated[float, Field(gt=0)] = 10.0
    """Seconds a gateway keeps retrying a batch of sends (or of ``sync`` frames) before answering
    ``unavailable``."""
    gateway_sync_timeout: Annotated[float, Field(gt=0)] = 5.0
    """Seconds a gateway waits for one API node to answer a batch of ``sync`` frames before asking again
    (until ``gateway_forward_deadline``). Longer than for sends: a batch of catch-ups is read work, and
    asking again too soon doubles it on an API that is only slow."""
    gateway_outbound_budget: Annotated[int, Field(ge=64 * 1024)] = 1024 * 1024
    """Bytes a connection may have waiting to be written; a client past it is closed with 4013."""
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
    password_cache_size: Annotated[int, Field(ge=0)] = 100_000
    """Accounts whose last good password an API node remembers (as a digest under a key that never leaves
    the process), so that logging in again costs one keyed hash instead of Argon2; 0 turns it off."""
    password_cache_ttl: Annotated[float, Field(gt=0)] = 3600.0
    """Seconds a remembered password stays good for; after it the next login runs Argon2 again."""

    # Entrance protection (see docs/operations.md, "Entrance protection")
    signing_keys: SecretStr | None = None
    """A key ring: comma-separated ``<key id>:<key>`` pairs; new tokens use the first (or
    ``signing_key_id``), tokens of every listed key verify. ``secret_key`` joins the ring as ``default``."""
    signing_key_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")] | None = None
    """The key of the ring that signs new tokens; the first listed if unset."""
    login_free_failures: Annotated[int, Field(ge=0)] = 3
    """Wrong passwords an account may see in a row before logins to it must wait."""
    login_address_free_failures: Annotated[int, Field(ge=0)] = 20
    """Wrong passwords one client address may send in a row (per API node) before it must wait."""
    login_backoff: Annotated[float, Field(gt=0)] = 1.0
    """The first wait after the free failures, in seconds; each further failure doubles it."""
    login_backoff_max: Annotated[float, Field(gt=0)] = 900.0
    """The longest wait between two login attempts of a throttled account or address."""
    login_failure_ttl: Annotated[float, Field(gt=0)] = 3600.0
    """Failures are forgotten this many seconds after the last one (a success forgets an account's at once)."""
    register_rate: Annotated[float, Field(gt=0)] = 0.01
    """Registrations per second from one client address (sustained), per API node."""
    register_burst: Annotated[int, Field(ge=1)] = 10
    argon2_concurrency: Annotated[int, Field(ge=1, le=256)] = 2
    """Password hashes computed at once by an API node (each takes ``argon2_memory_cost`` KiB)."""
    argon2_queue: Annotated[int, Field(ge=0)] = 32
    """Password checks that may wait for a free slot; beyond them, ``unavailable`` with Retry-After."""
    edit_rate: Annotated[float, Field(gt=0)] = 1.0
    """Edits per second one user may make (sustained), per API node."""
    edit_burst: Annotated[int, Field(ge=1)] = 20
    recall_rate: Annotated[float, Field(gt=0)] = 1.0
    """Recalls per second one user may make (sustained), per API node."""
    recall_burst: Annotated[int, Field(ge=1)] = 20
    typing_rate: Annotated[float, Field(gt=0)] = 5.0
    """Typing notices (start and stop) per second one user may send, per API node."""
    typing_burst: Annotated[int, Field(ge=1)] = 20
    friend_request_rate: Annotated[float, Field(gt=0)] = 0.05
    """Friend requests per second one user may send (sustained), per API node."""
    friend_request_burst: Annotated[int, Field(ge=1)] = 20
    friend_request_cooldown: Annotated[float, Field(ge=0)] = 86400.0
    """Seconds after a declined friend request before the same person may ask again."""
    press_rate: Annotated[float, Field(gt=0)] = 5.0
    """Button presses per second one user may make (sustained), per API node."""
    press_burst: Annotated[int, Field(ge=1)] = 20
    press_ttl: Annotated[float, Field(gt=0)] = 7 * 86400.0
    """Seconds an unacknowledged button press is kept for its recipient."""
    press_max_pending: Annotated[int, Field(ge=1)] = 1000
    """Unacknowledged presses one account may have; presses beyond are refused (``rate_limited``)."""
    commands_rate: Annotated[float, Field(gt=0)] = 0.2
    """Command declarations per second one account may make (sustained), per API node."""
    commands_burst: Annotated[int, Field(ge=1)] = 10
    ws_frame_rate: Annotated[float, Field(gt=0)] = 50.0
    """Frames per second one WebSocket connection may send (sustained)."""
    ws_frame_burst: Annotated[int, Field(ge=1)] = 200
    ws_flood_limit: Annotated[int, Field(ge=1)] = 50
    """Frames refused in a row for the frame rate after which the connection is closed (code 4029)."""
    trusted_proxies: Annotated[list[str], NoDecode] = []
    """CIDRs of load balancers whose ``X-Forwarded-For`` is believed; comma-separated in the environment."""
    access_refresh: Annotated[float, Field(gt=0)] = 5.0
    """How often a node retries reading the ``<prefix>_access`` bucket while it is missing or unreachable."""
    max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 16 * 1024
    """The largest request head (request line and headers) an API node or gateway reads."""
    header_timeout: Annotated[float, Field(gt=0)] = 10.0
    """Seconds a client has to send a complete request head (and, on a gateway, finish the handshake)."""
    metrics_token: SecretStr | None = None
    """A bearer token that opens ``/metrics`` on the public port; without it, ``/metrics`` is not served there."""
    metrics_host: str = "127.0.0.1"
    metrics_port: Annotated[int, Field(ge=0, le=65535)] | None = None
    """A separate listener (``metrics_host:metrics_port``) that serves ``/metrics`` without a token; off if unset."""
    log_format: Literal["text", "json"] = "text"
    """``json``: one JSON object per log record, with the node, request and connection ids (see im_server.logs)."""

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
    commit_max_queue_wait: Annotated[float, Field(gt=0)] = 2.0
    """Seconds the oldest queued send may have waited for its transaction before new sends are refused with
    ``unavailable`` and a ``retry_after`` (an overloaded node answers at once instead of queueing)."""
    trace_capacity: int = Field(default=10_000, ge=0, le=1_000_000)
    """Messages each node remembers for ``im cluster trace`` (when stored, published, pushed); 0: off."""
    trace_devices: int = Field(default=16, ge=1, le=1000)
    """Devices listed per message in a node's trace record (the count goes on beyond them)."""
    send_rate: float = 20.0
    """Messages per second one user may send (sustained), per API node."""
    send_burst: int = 100

    # Streaming messages (see docs/protocol.md, "Streaming messages")
    stream_max_open: Annotated[int, Field(ge=1)] = 5
    """Streams one user may have open at once."""
    stream_write_rate: Annotated[float, Field(gt=0)] = 20.0
    """Writes per second one user may make into their streams (sustained), per API node."""
    stream_write_burst: Annotated[int, Field(ge=1)] = 50
    stream_push_interval: Annotated[float, Field(gt=0)] = 0.1
    """Members' devices are told of a stream's growth at most once per this many seconds (per API node)."""
    stream_idle_timeout: Annotated[float, Field(gt=0)] = 60.0
    """A stream not written for this many seconds is closed as ``abandoned``."""
    stream_max_duration: Annotated[float, Field(gt=0)] = 900.0
    """A stream open for this many seconds is closed as ``abandoned``, however busy."""
    stream_sweep_interval: Annotated[float, Field(gt=0)] = 5.0
    """How often each API node looks for streams to close."""

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
    blob_replicas: Annotated[int, Field(ge=1, le=5)] | None = None
    """Replicas of the object store bucket when a node creates it; ``nats_replicas`` if unset."""
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
    image_decode_memory: Annotated[int, Field(ge=16 * 1024 * 1024)] = 256 * 1024 * 1024
    """Bytes of memory decoding one picture may take (estimated from its header); beyond, it is refused
    before decoding. With ``max_image_pixels`` at 50 million, every accepted picture fits in 256 MiB."""
    max_concurrent_decodes: Annotated[int, Field(ge=1, le=64)] = 2
    """Pictures an API node decodes (and audio/video files it reads) at once; further uploads wait their turn."""
    upload_quota_bytes: Annotated[int, Field(ge=0)] = 2 * 1024 * 1024 * 1024
    """Bytes one user may upload per UTC day, counted as they arrive (refused uploads count too); 0: no quota."""
    max_concurrent_uploads: Annotated[int, Field(ge=1, le=100)] = 3
    """Uploads one user may have in progress at once, per API node."""
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

    @field_validator("nats_url")
    @classmethod
    def _nats_urls(cls, value: str) -> str:
        urls = [item.strip() for item in value.split(",") if item.strip()]
        if not urls:
            raise ValueError("IM_NATS_URL names no server")
        for url in urls:
            if not re.fullmatch(r"(nats|tls)://[^\s/,]+(:\d{1,5})?/?", url):
                raise ValueError(f"IM_NATS_URL: {url!r} is not a nats:// or tls:// URL")
        return ",".join(urls)

    @model_validator(mode="after")
    def _one_nats_identity(self) -> Settings:
        identities = [self.nats_user, self.nats_nkey_seed_file, self.nats_creds_file]
        if sum(identity is not None for identity in identities) > 1:
            raise ValueError("set only one of IM_NATS_USER, IM_NATS_NKEY_SEED_FILE and IM_NATS_CREDS_FILE")
        if self.nats_password is not None and self.nats_user is None:
            raise ValueError("IM_NATS_PASSWORD needs IM_NATS_USER")
        if (self.nats_tls_cert_file is None) != (self.nats_tls_key_file is None):
            raise ValueError("IM_NATS_TLS_CERT_FILE and IM_NATS_TLS_KEY_FILE go together")
        return self

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _proxy_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):  # a JSON list, as a dumped model writes it
                text = text.strip("[]").replace("'", "").replace('"', "")
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        try:
            return [str(ipaddress.ip_network(item, strict=False)) for item in value]
        except ValueError as exc:
            raise ValueError(f"IM_TRUSTED_PROXIES: {exc}") from None

    def key_ring(self) -> tuple[str, dict[str, bytes]]:
        """The token signing keys by id, and the id of the one that signs new tokens.

        ``IM_SIGNING_KEYS`` lists ``<id>:<key>`` pairs; ``IM_SECRET_KEY`` is the key ``default``.
        Refuses to run without a key, or with a key shorter than 16 characters.
        """
        ring: dict[str, bytes] = {}
        if self.signing_keys is not None:
            for item in self.signing_keys.get_secret_value().split(","):
                if not item.strip():
                    continue
                key_id, sep, key = item.strip().partition(":")
                if not sep or not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", key_id) or key_id in ring:
                    raise ValueError("IM_SIGNING_KEYS must be comma-separated <key id>:<key> pairs with unique ids")
                if len(key) < 16:
                    raise ValueError(f"IM_SIGNING_KEYS: the key {key_id!r} is shorter than 16 characters")
                ring[key_id] = key.encode()
        if self.secret_key is not None:
            if len(self.secret_key.get_secret_value()) < 16:
                raise ValueError("IM_SECRET_KEY must have at least 16 characters")
            ring.setdefault("default", self.secret_key.get_secret_value().encode())
        if not ring:
            raise ValueError("IM_SECRET_KEY (or IM_SIGNING_KEYS) must be set and shared by all nodes")
        current = self.signing_key_id or next(iter(ring))
        if current not in ring:
            raise ValueError(f"IM_SIGNING_KEY_ID names {current!r}, which is not in the key ring")
        return current, ring

    def signing_key(self) -> bytes:
        """The key that signs new tokens; refuses to run without one (see :meth:`key_ring`)."""
        current, ring = self.key_ring()
        return ring[current]

    def nats_servers(self) -> list[str]:
        """The NATS server URLs of ``nats_url``, in order (blanks and repeats dropped)."""
        servers: list[str] = []
        for item in self.nats_url.split(","):
            url = item.strip()
            if url and url not in servers:
                servers.append(url)
        return servers

    @property
    def ws_url(self) -> str:
        """Where clients connect to this gateway."""
        return self.gateway_public_url or f"ws://{self.gateway_host}:{self.gateway_port}/ws"
