"""When a failed request is sent again, and how long a call may keep trying: no I/O here.

Both clients ask one :class:`Attempts` per call, after each failure, whether to try again and after
what pause (:meth:`Attempts.pause`); they do the sleeping and the sending. The rules:

- **What is retried.** A transport error (the server could not be reached, the connection broke,
  no answer in time), ``502``, ``503``, ``504`` and the ``unavailable`` code. Nothing else: a ``4xx``
  is an answer, and so is ``500``.
- **Which requests.** Those that can be repeated without a second effect (see
  :func:`im_sdk._base.is_idempotent`): every ``GET``, ``PUT`` and ``PATCH`` (they set a value), a message
  send (its ``client_msg_id`` makes the server store it once), ``mark_read``, ``typing`` and uploads
  (identical bytes are stored once). Any other request is retried only after an error that proves it
  never left (the connection could not be opened).
- **How long.** Pauses grow exponentially from :attr:`Retry.initial` up to :attr:`Retry.max_delay`,
  with jitter (each pause is random in the upper half of its bound, so that clients failed together do
  not come back together), and a server's ``Retry-After`` is honoured when it is longer. No attempt
  starts after :attr:`Retry.deadline` seconds from the first one; when the next pause would end past
  it, the last error is raised at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from time import monotonic

import httpx

from .errors import APIError, IMError, TransportError

__all__ = ["RETRYABLE_CODES", "RETRYABLE_STATUSES", "Attempts", "Retry", "is_retryable", "surely_unsent"]

RETRYABLE_STATUSES = frozenset({502, 503, 504})
"""Statuses that say the server (or a load balancer before it) could not serve the request now."""

RETRYABLE_CODES = frozenset({"unavailable"})
"""Error codes that say the same."""

_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


@dataclass(frozen=True)
class Retry:
    """How requests are retried; pass ``Retry(deadline=0)`` to never retry.

    Attributes:
        deadline: Seconds from a call's first attempt after which no new attempt starts.
        initial: Bound of the first pause, in seconds.
        factor: Growth of the bound from one pause to the next.
        max_delay: Largest bound of a pause (a longer ``Retry-After`` still wins).
        jitter: Randomize each pause within the upper half of its bound.
    """

    deadline: float = 30.0
    initial: float = 0.1
    factor: float = 2.0
    max_delay: float = 5.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.deadline < 0 or self.initial < 0 or self.max_delay < 0 or self.factor < 1:
            raise ValueError("deadline, initial and max_delay must be >= 0 and factor >= 1")

    def start(self) -> Attempts:
        """The retry state of one call, starting now."""
        return Attempts(self)


def surely_unsent(exc: BaseException) -> bool:
    """Whether a transport error happened before the request could have reached the server."""
    cause = exc.__cause__ if isinstance(exc, TransportError) else exc
    return isinstance(cause, _UNSENT)


def is_retryable(exc: BaseException, *, idempotent: bool) -> bool:
    """Whether trying the same request again may succeed, and is harmless."""
    if isinstance(exc, TransportError):
        return idempotent or surely_unsent(exc)
    if isinstance(exc, APIError):
        return idempotent and (exc.status in RETRYABLE_STATUSES or exc.code in RETRYABLE_CODES)
    return False


class Attempts:
    """The retries of one call: :meth:`pause` after each failure says whether and when to try again."""

    def __init__(self, retry: Retry) -> None:
        self.retry = retry
        self.started = monotonic()
        self.failures = 0
        self._bound = min(retry.initial, retry.max_delay)

    def remaining(self) -> float:
        """Seconds left before the deadline (never negative)."""
        return max(0.0, self.started + self.retry.deadline - monotonic())

    def pause(self, exc: BaseException, *, idempotent: bool) -> float | None:
        """Seconds to wait before the next attempt after ``exc``, or ``None`` to give up (raise ``exc``)."""
        self.failures += 1
        if not isinstance(exc, IMError) or not is_retryable(exc, idempotent=idempotent):
            return None
        bound = self._bound
        self._bound = min(self.retry.max_delay, bound * self.retry.factor if bound else self.retry.max_delay)
        delay = random.uniform(bound / 2, bound) if self.retry.jitter else bound
        retry_after = exc.retry_after if isinstance(exc, APIError) else None
        if retry_after is not None:
            delay = max(delay, retry_after)
        if delay >= self.remaining():
            return None
        return delay
