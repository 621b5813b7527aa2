"""Small helpers shared by the stores."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite

__all__ = ["insert_ignore", "ms_to_datetime", "now_ms"]


def now_ms() -> int:
    """The current time in integer milliseconds."""
    return time.time_ns() // 1_000_000


def ms_to_datetime(ms: int) -> datetime:
    """Milliseconds since the epoch to an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def insert_ignore(dialect: str, table: Table) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the given dialect."""
    module: Any = postgresql if dialect == "postgresql" else sqlite
    return module.insert(table).on_conflict_do_nothing()
