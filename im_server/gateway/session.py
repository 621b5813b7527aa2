"""The gateway side of one WebSocket connection, without I/O.

Feed it the frames a client sent; it answers with actions for the node to carry out: a frame to send
back (:class:`Reply`), a send to hand to the message service (:class:`Forward`), a catch-up to ask an
API node for (:class:`Sync`) or a close (:class:`Close`). Authentication is the first frame and nothing
else is accepted before it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from pydantic import ValidationError

from im_schema.errors import ErrorCode
from im_schema.frames import (
    AuthFrame,
    ErrorFrame,
    PingFrame,
    PongFrame,
    ReadyFrame,
    SendFrame,
    SyncFrame,
    TypingFrame,
    client_frames,
)
from im_schema.limits import (
    CLOSE_AUTH_FAILED,
    CLOSE_PROTOCOL_UNSUPPORTED,
    CLOSE_SESSION_REVOKED,
    SUPPORTED_PROTOCOLS,
)

from ..services.tokens import ExpiredToken, InvalidToken, TokenCodec

__all__ = ["Action", "Authenticated", "Close", "Forward", "GatewaySession", "Reply", "Sync", "Typing"]


@dataclass(frozen=True, slots=True)
class Reply:
    """Send this text frame to the client."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Forward:
    """Hand this validated send to the message service; its answer goes back to the client."""

    frame: SendFrame
    raw: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Send ``data`` (if any), then close with ``code``."""

    code: int
    reason: str
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The first frame was a valid ``auth``; send ``ready`` once the route is registered."""

    user_id: int
    device_id: str
    session_id: str
    ready: bytes
    token: str = ""
    """The access token: forwarded with the connection's sends, so the API can tell who sent them."""


@dataclass(frozen=True, slots=True)
class Typing:
    """Tell the message service the user is typing (fire and forget)."""

    frame: TypingFrame


@dataclass(frozen=True, slots=True)
class Sync:
    """Ask an API node for "conversations since" on behalf of this connection's device."""

    frame: SyncFrame


Action = Reply | Forward | Sync | Typing | Close


def _error(code: ErrorCode, message: str, client_msg_id: str | None = None, frame_id: str | None = None) -> bytes:
    frame = ErrorFrame(code=code.value, message=message, client_msg_id=client_msg_id, id=frame_id)
    return frame.model_dump_json(exclude_none=True).encode()


def _answer_ids(data: bytes) -> tuple[str | None, str | None]:
    """The ``client_msg_id`` and the ``sync`` frame ``id`` an answer to ``data`` should carry, as far as
    they can be read (at most 64 characters each): the client waits for an answer to them."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(raw, dict):
        return None, None
    client_msg_id = raw["client_msg_id"][:64] if isinstance(raw.get("client_msg_id"), str) else None
    frame_id = raw["id"][:64] if raw.get("type") == "sync" and isinstance(raw.get("id"), str) else None
    return client_msg_id, frame_id


def _explain(exc: ValidationError, data: bytes) -> tuple[ErrorCode, str, str | None, str | None]:
    errors = exc.errors()
    if any(error["type"] == "json_invalid" for error in errors):
        return ErrorCode.BAD_REQUEST, "the frame is not valid JSON", None, None
    if any(error["type"] in ("union_tag_invalid", "union_tag_not_found") and not error["loc"] for error in errors):
        return ErrorCode.UNKNOWN_FRAME, "unknown or missing frame type", None, None
    client_msg_id, frame_id = _answer_ids(data)
    first = errors[0]
    if not first["loc"]:
        return ErrorCode.BAD_REQUEST, "a frame is a JSON object with a 'type'", None, None
    where = ".".join(str(part) for part in first["loc"])
    return ErrorCode.BAD_REQUEST, f"invalid frame: {where}: {first['msg']}"[:300], client_msg_id, frame_id


def _never(_: str) -> bool:
    return False


class GatewaySession:
    """One connection's protocol state.

    ``revoked`` says whether a session id was logged out (the node's copy of the revocation bucket);
    a token of such a session is refused like a forged one, with close code 4012.
    """

    def __init__(
        self,
        tokens: TokenCodec,
        node_id: str,
        *,
        clock: Callable[[], float] = time.time,
        revoked: Callable[[str], bool] = _never,
    ) -> None:
        self._tokens = tokens
        self._node_id = node_id
        self._clock = clock
        self._revoked = revoked
        self.user_id: int | None = None
        self.device_id: str | None = None
        self.session_id: str | None = None
        """The device session of the token, once authenticated."""

    def open(self, data: str | bytes) -> Authenticated | Close:
        """Handle the first frame, which must be ``auth``."""
        raw = data.encode() if isinstance(data, str) else data
        try:
            frame = client_frames.validate_json(raw)
        except ValidationError as exc:
            code, message, _, _ = _explain(exc, raw)
            return Close(CLOSE_AUTH_FAILED, "authenticate first", _error(code, message))
        if not isinstance(frame, AuthFrame):
            return Close(CLOSE_AUTH_FAILED, "authenticate first", _error(ErrorCode.UNAUTHORIZED, "send auth first"))
        if frame.protocol not in SUPPORTED_PROTOCOLS:
            supported = sorted(SUPPORTED_PROTOCOLS)
            message = f"protocol {frame.protocol} is not supported; this server speaks {supported}"
            return Close(
                CLOSE_PROTOCOL_UNSUPPORTED,
                "protocol unsupported",
                _error(ErrorCode.UNSUPPORTED_PROTOCOL, message),
            )
        try:
            claims = self._tokens.verify(frame.token, now=self._clock())
        except ExpiredToken:
            return Close(
                CLOSE_AUTH_FAILED,
                "token expired",
                _error(ErrorCode.TOKEN_EXPIRED, "the access token expired"),
            )
        except InvalidToken:
            return Close(
                CLOSE_AUTH_FAILED,
                "invalid token",
                _error(ErrorCode.UNAUTHORIZED, "the access token is not valid"),
            )
        if self._revoked(claims.session_id):
            return Close(
                CLOSE_SESSION_REVOKED,
                "logged out",
                _error(ErrorCode.UNAUTHORIZED, "this device was logged out; log in again"),
            )
        self.user_id, self.device_id, self.session_id = claims.user_id, claims.device_id, claims.session_id
        ready = ReadyFrame(node_id=self._node_id, user_id=claims.user_id, device_id=claims.device_id)
        return Authenticated(
            claims.user_id, claims.device_id, claims.session_id, ready.model_dump_json().encode(), frame.token
        )

    def slow_down(self, data: str | bytes, retry_after: float) -> bytes:
        """The ``rate_limited`` answer to a frame refused for the connection's frame rate.

        It names the ``client_msg_id`` of a send and the ``id`` of a ``sync`` (read from the frame, which
        is not otherwise looked at), so the client knows which request to send again after ``retry_after``
        seconds rather than waiting for an answer that never comes.
        """
        raw = data.encode() if isinstance(data, str) else data
        client_msg_id, frame_id = _answer_ids(raw)
        frame = ErrorFrame(
            code=ErrorCode.RATE_LIMITED,
            message="too many frames; slow down",
            client_msg_id=client_msg_id,
            id=frame_id,
            retry_after=retry_after,
        )
        return frame.model_dump_json(exclude_none=True).encode()

    def receive(self, data: str | bytes) -> Action:
        """Handle a frame after authentication."""
        raw = data.encode() if isinstance(data, str) else data
        try:
            frame = client_frames.validate_json(raw)
        except ValidationError as exc:
            return Reply(_error(*_explain(exc, raw)))
        if isinstance(frame, SendFrame):
            return Forward(frame, raw)
        if isinstance(frame, SyncFrame):
            return Sync(frame)
        if isinstance(frame, TypingFrame):
            return Typing(frame)
        if isinstance(frame, PingFrame):
            return Reply(PongFrame(id=frame.id).model_dump_json(exclude_none=True).encode())
        return Reply(_error(ErrorCode.BAD_REQUEST, "already authenticated"))
