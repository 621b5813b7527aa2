"""Storage errors, told apart: lock contention, a full disk, or a database that cannot be reached.

:func:`classify` reads an exception raised by a transaction (SQLite or PostgreSQL, through SQLAlchemy or
not) and names its kind; :class:`StorageHealth` remembers the outcome of recent writes, for ``/healthz``
and the metrics. Which error a client sees for each kind is decided in :mod:`im_server.errors`.

- ``busy``: a lock timeout, a deadlock, a serialization failure. Retrying soon usually works.
- ``full``: the disk (or the database's quota) is full. Nothing new can be stored until an operator acts.
- ``unavailable``: the connection is lost, the server refuses connections, or the disk fails to write.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from typing import Literal

__all__ = ["FaultKind", "StorageFault", "StorageHealth", "classify"]

log = logging.getLogger(__name__)

FaultKind = Literal["busy", "full", "unavailable"]
KINDS: tuple[FaultKind, ...] = ("busy", "full", "unavailable")

# SQLite primary result codes (https://sqlite.org/rescode.html).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_NOMEM = 7
_SQLITE_READONLY = 8
_SQLITE_IOERR = 10
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_CANTOPEN = 14

# PostgreSQL SQLSTATE values and classes (https://www.postgresql.org/docs/current/errcodes-appendix.html).
_PG_BUSY = {"40001", "40P01", "55P03", "55006"}
_PG_FULL_CLASS = "53"  # insufficient resources: disk full, out of memory, too many connections
_PG_UNAVAILABLE_CLASSES = ("08", "57P")  # connection exception; operator intervention (shutdown)

LOW_DISK_BYTES = 1024 * 1024
"""Below this many free bytes next to a SQLite database, the disk counts as full."""


@dataclass(frozen=True, slots=True)
class StorageFault:
    """A classified storage error."""

    kind: FaultKind
    detail: str


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 8:
        seen.append(current)
        orig = getattr(current, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's error
        current = orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
    return seen


def classify(exc: BaseException, database_path: str | None = None) -> StorageFault | None:
    """The kind of a storage error, or ``None`` when it is not one (a bug, a constraint violation)."""
    for error in _chain(exc):
        detail = f"{type(error).__name__}: {error}"[:300]
        code = getattr(error, "sqlite_errorcode", None)
        if isinstance(code, int):
            primary = code & 0xFF
            if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
                return StorageFault("busy", detail)
            if primary == _SQLITE_FULL:
                return StorageFault("full", detail)
            if primary == _SQLITE_IOERR:
                # SQLite reports a write that hit a full disk as an I/O error at times (the WAL's growth).
                return StorageFault("full" if _disk_low(database_path) else "unavailable", detail)
            if primary in (_SQLITE_NOMEM, _SQLITE_READONLY, _SQLITE_CORRUPT, _SQLITE_CANTOPEN):
                return StorageFault("unavailable", detail)
        sqlstate = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
        if isinstance(sqlstate, str) and len(sqlstate) == 5:
            if sqlstate in _PG_BUSY:
                return StorageFault("busy", detail)
            if sqlstate.startswith(_PG_FULL_CLASS):
                return StorageFault("full", detail)
            if sqlstate.startswith(_PG_UNAVAILABLE_CLASSES):
                return StorageFault("unavailable", detail)
        if isinstance(error, OSError):
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                return StorageFault("full", detail)
            return StorageFault("unavailable", detail)
        if type(error).__name__ in ("ConnectionDoesNotExistError", "InterfaceError", "InternalClientError"):
            return StorageFault("unavailable", detail)
        text = str(error).lower()
        if "database is locked" in text or "deadlock" in text:
            return StorageFault("busy", detail)
        if "disk is full" in text or "no space left" in text:
            return StorageFault("full", detail)
        if getattr(error, "connection_invalidated", False) or "connection was closed" in text:
            return StorageFault("unavailable", detail)
    return None


def _disk_low(database_path: str | None) -> bool:
    if not database_path:
        return False
    try:
        stats = os.statvfs(os.path.dirname(os.path.abspath(database_path)) or ".")
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < LOW_DISK_BYTES


class StorageHealth:
    """Outcomes of recent writes: the last success, the last fault, and a count of faults per kind."""

    def __init__(self, database_path: str | None = None) -> None:
        self.database_path = database_path
        self.last_ok: float | None = None
        self.last_fault: tuple[StorageFault, float] | None = None
        self.counts: dict[FaultKind, int] = dict.fromkeys(KINDS, 0)

    def ok(self) -> None:
        """A write committed."""
        self.last_ok = time.monotonic()

    def failed(self, exc: BaseException) -> StorageFault | None:
        """A write failed: classify, count and log it; returns the fault (``None``: not a storage error)."""
        fault = classify(exc, self.database_path)
        if fault is not None:
            self.counts[fault.kind] += 1
            self.last_fault = (fault, time.monotonic())
            log.warning("storage %s: %s", fault.kind, fault.detail)
        return fault

    def writable(self) -> tuple[bool, str | None]:
        """Whether the database takes writes, as far as is known, and if not why.

        Not writable: the last write failed with a fault other than contention (and none succeeded
        since), or the disk of a SQLite database is (nearly) full.
        """
        if self.database_path and _disk_low(self.database_path):
            return False, "full"
        if self.last_fault is not None:
            fault, at = self.last_fault
            if fault.kind != "busy" and (self.last_ok is None or self.last_ok < at):
                return False, fault.kind
        return True, None
