"""Database access: every transaction is one named synchronous function, run in one hop.

Stores call ``await db.read(fn, *args)`` or ``await db.write(fn, *args)`` where ``fn(connection, *args)``
is plain SQLAlchemy Core code. How it runs depends on the database:

- **SQLite**: in a thread, on a connection of its own. All writes go through a single writer thread
  (SQLite has one writer at a time anyway, so they queue in memory instead of on file locks) and start
  with ``BEGIN IMMEDIATE``; reads use a small pool of reader threads (WAL lets them run beside the
  writer). A transaction costs one thread hop, however many statements it runs, which keeps commit
  latency flat when the event loop is busy. The database runs in WAL mode with ``synchronous=FULL``: a
  committed send survives a power cut.
- **PostgreSQL**: on the event loop with asyncpg, through SQLAlchemy's ``run_sync`` (no threads).

Every write's outcome goes to :attr:`Database.health` (:mod:`.faults`): failures are classified (lock
contention, full disk, database unreachable), counted and logged, for ``/healthz`` and the metrics.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine.url import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .faults import StorageHealth

__all__ = ["Database"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Transaction = Callable[..., T]
"""``fn(connection, *args)``: one transaction's work, as plain synchronous SQLAlchemy Core."""

_MIGRATIONS = Path(__file__).with_name("migrations")
_MIGRATION_LOCK_KEY = 0x696D_6D69  # "immi": one migrator at a time on PostgreSQL
_SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=30000",
    # Checkpoints run in a thread of their own (see Database._checkpoints), never inside a commit.
    "PRAGMA wal_autocheckpoint=0",
)
CHECKPOINT_INTERVAL = 1.0
"""Seconds between passive WAL checkpoints on SQLite."""


class Database:
    """Runs named transactions on SQLite (``sqlite:///path``) or PostgreSQL (``postgresql://...``)."""

    def __init__(self, url: str, *, readers: int = 4, echo: bool = False) -> None:
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        self._engine: Engine | None = None
        self._async_engine: AsyncEngine | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._connections: list[Connection] = []
        self._stop_checkpoints = threading.Event()
        self._checkpointer: threading.Thread | None = None
        database = parsed.database if self.dialect == "sqlite" and parsed.database != ":memory:" else None
        self.health = StorageHealth(database or None)
        """Outcomes of recent writes (see :mod:`.faults`)."""
        if self.dialect == "sqlite":
            self._engine = self._sqlite_engine(parsed, readers, echo)
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
            self._readers = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-reader")
            self._checkpointer = threading.Thread(target=self._checkpoints, name="sqlite-checkpoint", daemon=True)
        else:
            self._async_engine = create_async_engine(
                parsed, echo=echo, pool_size=10, max_overflow=10, pool_pre_ping=True
            )

    @staticmethod
    def _sqlite_engine(url: URL, readers: int, echo: bool) -> Engine:
        database = url.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Messages and password hashes: the file is the owner's alone from the start, and SQLite
            # gives its -wal and -shm files the database file's permissions.
            os.close(os.open(database, os.O_RDWR | os.O_CREAT, 0o600))
        engine = create_engine(
            url.set(drivername="sqlite+pysqlite"),
            echo=echo,
            pool_size=readers + 1,
            max_overflow=readers,
            connect_args={"timeout": 30, "check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take over transaction control from the driver (see SQLAlchemy's pysqlite notes).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            for pragma in _SQLITE_PRAGMAS:
                cursor.execute(pragma)
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

        return engine

    def _run_sqlite(self, mode: str, fn: Transaction[T], *args: Any) -> T:
        # Each database thread keeps one connection for good: no pool round trip per transaction.
        conn: Connection | None = getattr(self._local, "connection", None)
        if conn is None or conn.closed:
            assert self._engine is not None
            conn = self._local.connection = self._engine.connect()
            self._connections.append(conn)
        with conn.execution_options(sqlite_begin=mode).begin():
            return fn(conn, *args)

    def _checkpoints(self) -> None:
        # A commit that also checkpoints copies the WAL into the database and fsyncs it, which stalls every
        # send queued behind it (measured: commits of 100 ms and more). Passive checkpoints here never block
        # the writer or the readers; they copy what they can, and the WAL restarts once one completes.
        assert self._engine is not None
        with self._engine.connect() as conn:
            while not self._stop_checkpoints.wait(CHECKPOINT_INTERVAL):
                try:
                    conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
                except Exception as exc:
                    log.warning("WAL checkpoint failed: %s", exc)

    async def read(self, fn: Transaction[T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` in a read transaction."""
        if self._readers is not None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._readers, self._run_sqlite, "DEFERRED", fn, *args)
        assert self._async_engine is not None
        async with self._async_engine.connect() as conn, conn.begin():
            return await conn.run_sync(fn, *args)

    async def write(self, fn: Transaction[T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` in a write transaction (committed when it returns)."""
        try:
            if self._writer is not None:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._writer, self._run_sqlite, "IMMEDIATE", fn, *args)
            else:
                assert self._async_engine is not None
                async with self._async_engine.connect() as conn, conn.begin():
                    result = await conn.run_sync(fn, *args)
        except Exception as exc:
            self.health.failed(exc)
            raise
        self.health.ok()
        return result

    async def probe_write(self) -> bool:
        """Try a write that changes nothing (so that a disk that has room again is noticed); True if it worked."""
        try:
            await self.write(_probe)
        except Exception:
            return False
        return True

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (and start SQLite's checkpoint thread)."""
        await self.write(self._upgrade)
        if self._checkpointer is not None and not self._checkpointer.is_alive():
            self._checkpointer.start()

    def _upgrade(self, connection: Connection) -> None:
        if self.dialect == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, "heads")  # features may add migrations on branches of their own

    async def close(self) -> None:
        """Finish running transactions and close every connection."""
        self._stop_checkpoints.set()
        if self._checkpointer is not None and self._checkpointer.is_alive():
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.join)
        for executor in (self._writer, self._readers):
            if executor is not None:
                await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)
        for conn in self._connections:
            conn.close()
        if self._engine is not None:
            self._engine.dispose()
        if self._async_engine is not None:
            await self._async_engine.dispose()


def _probe(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        # Setting the header field to its own value still writes a page: it fails on a full disk.
        version = connection.exec_driver_sql("PRAGMA user_version").scalar()
        connection.exec_driver_sql(f"PRAGMA user_version = {int(version or 0)}")
    else:
        connection.execute(text("SELECT 1"))
