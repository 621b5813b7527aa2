"""Real-time delivery: the I/O-free sync engine, reconnect policy and backoff."""

from __future__ import annotations

from .backoff import Backoff
from .protocol import Deliver, Fetch, StartFrom, SyncEngine

__all__ = ["Backoff", "Deliver", "Fetch", "StartFrom", "SyncEngine"]
