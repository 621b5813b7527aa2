"""What the realtime connection's events mean, without I/O: reconnect (and how soon) or give up, resync.

- A close is classified by :func:`classify_close`; :func:`reconnect_delay` says how soon to come back:
  at once after ``4013`` (too slow to read: :class:`TooSlow`), within :data:`GOING_AWAY_SPREAD` seconds
  after ``4010``/``1001`` (:class:`GoingAway`), else after the next backoff delay. Every reconnect is
  followed by a resync ("conversations since" the cursor).
- The first frame after ``auth`` is judged by :func:`auth_answer`: ``ready``, or refresh the token
  and reconnect (:data:`REFRESH`), or the error to raise.
- Where to connect is kept by :class:`Gateways`: the API's assignment, then (after a working connection
  is lost) the assignment's alternates, without asking the API again.
- When to resync on an open connection is kept by :class:`ResyncSchedule`: when the gateway asks (a
  ``resync`` frame), but at most once per :data:`RESYNC_SPACING` seconds however often it asks (a
  flood of frames costs one pass per interval), and when nothing came for ``resync_after`` seconds.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from time import monotonic

from im_schema.frames import ErrorFrame, ReadyFrame
from im_schema.limits import (
    CLOSE_AUTH_FAILED,
    CLOSE_AUTH_TIMEOUT,
    CLOSE_FLOODING,
    CLOSE_GOING_AWAY,
    CLOSE_PROTOCOL_UNSUPPORTED,
    CLOSE_REPLACED,
    CLOSE_SESSION_REVOKED,
    CLOSE_TOO_SLOW,
)
from im_schema.rest import GatewayAddress, GatewayAssignment

from ..errors import (
    AuthenticationError,
    ConnectionReplaced,
    IMError,
    ProtocolError,
    TransportError,
    error_for,
)

__all__ = [
    "GOING_AWAY_SPREAD",
    "REFRESH",
    "RESYNC_SPACING",
    "Gateways",
    "GoingAway",
    "RefreshToken",
    "ResyncSchedule",
    "TooSlow",
    "auth_answer",
    "classify_close",
    "reconnect_delay",
]

GOING_AWAY_SPREAD = 2.0
"""Clients of a draining node come back spread over this many seconds."""


RESYNC_SPACING = 1.0
"""Least seconds between two resyncs that the gateway asked for on one connection."""


class GoingAway(TransportError):
    """The node is draining or stopping; reconnect soon, probably to another node."""


class TooSlow(TransportError):
    """The gateway closed the connection because this client read its pushes too slowly (``4013``):
    reconnect at once and resync."""


def classify_close(code: int | None, reason: str | None, error_code: str | None = None) -> IMError:
    """The exception that a close (and the error frame before it, if any) stands for."""
    text = reason or f"connection closed with code {code}"
    if code == CLOSE_PROTOCOL_UNSUPPORTED or error_code == "unsupported_protocol":
        return ProtocolError(text)
    if code == CLOSE_REPLACED:
        return ConnectionReplaced(text)
    if code == CLOSE_SESSION_REVOKED:
        return AuthenticationError("unauthorized", reason or "this device was logged out", status=401)
    if code == CLOSE_AUTH_FAILED or error_code in ("unauthorized", "token_expired"):
        return error_for(error_code or "unauthorized", text, status=401)
    if code == CLOSE_GOING_AWAY or code == 1001:
        return GoingAway(text)
    if code == CLOSE_TOO_SLOW:
        return TooSlow(text)
    if code in (CLOSE_AUTH_TIMEOUT, CLOSE_FLOODING):
        return TransportError(text)  # reconnect, after the usual backoff (a flooding client slows down)
    return TransportError(text)


class RefreshToken:
    """The token expired during the handshake: refresh it, then reconnect."""


REFRESH = RefreshToken()
"""What :func:`auth_answer` returns for an expired token."""


def auth_answer(frame: object, close_code: int | None, close_reason: str | None) -> ReadyFrame | RefreshToken | IMError:
    """What the first frame after ``auth`` means (``None`` if the connection closed instead)."""
    if isinstance(frame, ReadyFrame):
        return frame
    if isinstance(frame, ErrorFrame):
        if frame.code == "token_expired":
            return REFRESH
        return classify_close(close_code, frame.message, frame.code)
    return classify_close(close_code, close_reason)


def reconnect_delay(exc: BaseException, delays: Iterator[float]) -> float:
    """Seconds to wait before reconnecting after ``exc``."""
    if isinstance(exc, TooSlow):
        return 0.0  # the client is alive and caught up by sync; it lost only its push queue
    if isinstance(exc, GoingAway):
        return random.uniform(0, GOING_AWAY_SPREAD)
    return next(delays)


class ResyncSchedule:
    """When a connected client should run "conversations since" again, without reconnecting.

    Made once the pass that follows ``ready`` is done. The shell asks :meth:`due` before each read,
    reads with :meth:`wait` as its timeout, and reports what happened: :meth:`heard` (any frame),
    :meth:`asked` (a ``resync`` frame) and :meth:`done` (a pass finished).

    Args:
        quiet: Seconds without any frame after which a pass is due (``None``: never).
        spacing: Least seconds between the end of a pass and a pass that the gateway asked for.
    """

    def __init__(self, quiet: float | None, *, spacing: float = RESYNC_SPACING) -> None:
        now = monotonic()
        self.quiet = quiet
        self.spacing = spacing
        self._last_heard = now
        self._last_pass = now
        self._asked = False

    def heard(self) -> None:
        """A frame arrived: the connection is not quiet."""
        self._last_heard = monotonic()

    def asked(self) -> None:
        """The gateway sent ``resync``: a pass is due, now or once the spacing allows."""
        self._asked = True

    def done(self) -> None:
        """A pass finished: nothing is due until asked again or quiet again."""
        self._last_pass = self._last_heard = monotonic()
        self._asked = False

    def due(self) -> bool:
        """Whether a pass should run now."""
        when = self._due_at()
        return when is not None and monotonic() >= when

    def wait(self) -> float | None:
        """How long to wait for the next frame before a pass is due (``None``: no limit)."""
        when = self._due_at()
        return None if when is None else max(0.0, when - monotonic())

    def _due_at(self) -> float | None:
        times = []
        if self._asked:
            times.append(self._last_pass + self.spacing)
        if self.quiet is not None:
            times.append(self._last_heard + self.quiet)
        return min(times) if times else None


class Gateways:
    """Which gateway the next realtime connection goes to.

    The first connection goes where the API assigns (``GET /v1/gateway``). The assignment also names the
    other live gateways, best first for this device (:attr:`GatewayAssignment.alternates`). When a
    connection that was working is lost, the next attempt goes to the first of them not yet tried, without
    asking the API: when a gateway dies, all its clients come back at once, and an API node answering
    thousands of assignments is then the slowest part of the way back. An attempt that fails before the
    gateway said ``ready`` (the list may be stale: that gateway is gone too) drops the alternates, and the
    attempt after it asks the API, naming the gateway lost (:attr:`lost`) so that another is chosen.

    The shell asks :meth:`next` for a known gateway, else asks the API and reports its answer with
    :meth:`assigned`; it calls :meth:`connecting` before opening the connection and :meth:`up` once the
    gateway said ``ready``.
    """

    def __init__(self) -> None:
        self.lost: str | None = None
        """The gateway of the last connection (a connection only ever ends by being lost)."""
        self._next: list[GatewayAddress] = []
        self._held: list[GatewayAddress] = []

    def next(self) -> GatewayAddress | None:
        """The gateway to try now without asking the API, if any."""
        while self._next:
            address = self._next.pop(0)
            if address.node_id != self.lost:
                return address
        return None

    def assigned(self, assignment: GatewayAssignment) -> GatewayAddress:
        """The API's answer: its gateway is tried now, its alternates after losing a working connection."""
        self._next = list(assignment.alternates)
        return assignment

    def connecting(self, address: GatewayAddress) -> None:
        """A connection to ``address`` is being opened: the alternates wait until it works."""
        self.lost = address.node_id
        self._held, self._next = self._next, []

    def up(self) -> None:
        """The gateway said ``ready``: if this connection is lost, the next alternate is tried."""
        self._next, self._held = self._held, []
