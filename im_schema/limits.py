"""Protocol constants and the hard limits of the wire format.

Servers may set lower limits (``IM_MAX_TEXT_LEN`` and friends); these are the ceilings the schema
itself enforces, so that no deployment can be configured into accepting unbounded input.
"""

from __future__ import annotations

__all__ = [
    "CLOSE_AUTH_FAILED",
    "CLOSE_AUTH_TIMEOUT",
    "CLOSE_FLOODING",
    "CLOSE_GOING_AWAY",
    "CLOSE_PROTOCOL_UNSUPPORTED",
    "CLOSE_REPLACED",
    "CLOSE_SESSION_REVOKED",
    "CLOSE_TOO_SLOW",
    "HISTORY_PAGE_MAX",
    "MAX_DISPLAY_NAME_LEN",
    "MAX_GATEWAY_ALTERNATES",
    "MAX_PASSWORD_LEN",
    "MAX_TEXT_LEN",
    "MIN_PASSWORD_LEN",
    "PROTOCOL_VERSION",
    "RECENT_MAX",
    "RECENT_PAGE_BUDGET",
    "SUPPORTED_PROTOCOLS",
]

PROTOCOL_VERSION = 1
"""The WebSocket protocol version this schema speaks."""

SUPPORTED_PROTOCOLS = frozenset({1})

MAX_TEXT_LEN = 16_000
"""Hard ceiling on a text message, in characters. Servers default to 4,000."""

MIN_PASSWORD_LEN = 8
MAX_PASSWORD_LEN = 1024
MAX_DISPLAY_NAME_LEN = 64

MAX_GATEWAY_ALTERNATES = 16
"""The most alternate gateways one assignment names (``GET /v1/gateway``)."""

HISTORY_PAGE_MAX = 1000
"""The most messages one history request returns."""

RECENT_MAX = 50
"""The most recent messages one conversation of a "conversations since" page may carry (``recent``)."""

RECENT_PAGE_BUDGET = 1000
"""The most recent messages one "conversations since" page carries in all; conversations past it carry
none (``recent_after`` is ``None``) and are caught up by history as without ``recent``."""

# WebSocket close codes (4000-4999 are reserved for applications by RFC 6455).
CLOSE_AUTH_FAILED = 4001
"""The token was missing, malformed, forged or expired. Reconnecting with the same token is pointless."""
CLOSE_AUTH_TIMEOUT = 4002
"""No auth frame arrived in time."""
CLOSE_PROTOCOL_UNSUPPORTED = 4003
"""The client speaks a protocol version the server does not."""
CLOSE_GOING_AWAY = 4010
"""The node is draining or stopping: reconnect, possibly elsewhere, and resync."""
CLOSE_REPLACED = 4011
"""The same device connected again; this older connection is closed."""
CLOSE_SESSION_REVOKED = 4012
"""The device was logged out."""
CLOSE_TOO_SLOW = 4013
"""The client did not read its pushes fast enough (its outbound budget ran out): reconnect and resync."""
CLOSE_FLOODING = 4029
"""The client kept sending frames faster than the connection's frame rate after being told to slow down
(``rate_limited`` error frames): reconnect later, and send slower."""
