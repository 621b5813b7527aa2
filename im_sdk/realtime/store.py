"""A device's sync cursors on disk, so that a restarted client resumes where it stopped.

:class:`CursorStore` keeps, in a small SQLite file, the conversations cursor (``since``) and the
per-conversation watermarks of each account (server, user and device) that used the file.
:class:`CursorKeeper` connects a client's :class:`~im_sdk.realtime.protocol.SyncEngine` to a store:
it restores the saved cursors when the first connection tells who the account is, and saves what a
:class:`~im_sdk.realtime.checkpoint.Checkpoint` allows after the application was given events.

Writes are synchronous and small (one transaction with the watermarks that changed). The file is in
WAL mode with ``synchronous=NORMAL``: a crash of the process never loses a committed save; a power
failure may lose the last ones, which only means re-yielding a few events.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from im_schema.models import Message

from .checkpoint import Checkpoint, Cursors
from .protocol import SyncEngine

__all__ = ["CursorKeeper", "CursorStore"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    account TEXT PRIMARY KEY,
    since TEXT
);
CREATE TABLE IF NOT EXISTS watermarks (
    account TEXT NOT NULL,
    conversation TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (account, conversation)
) WITHOUT ROWID;
"""


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    # Ctrl-C may land anywhere in here, and must go on up unchanged. A transaction it left open is
    # rolled back by the next one.
    try:
        if db.in_transaction:
            db.execute("ROLLBACK")
        db.execute("BEGIN IMMEDIATE")
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


class CursorStore:
    """Sync cursors in one SQLite file, per account; the file is created (mode 0600) on first use."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                # Conversation ids and positions say who talks to whom: keep them private.
                descriptor = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(descriptor)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def load(self, account: str) -> Cursors:
        """What was saved for ``account`` (nothing, the first time)."""
        with self._lock:
            db = self._connect()
            row = db.execute("SELECT since FROM accounts WHERE account = ?", (account,)).fetchone()
            rows = db.execute("SELECT conversation, seq FROM watermarks WHERE account = ?", (account,)).fetchall()
        return Cursors(since=row[0] if row else None, watermarks={conversation: seq for conversation, seq in rows})

    def save(self, account: str, cursors: Cursors) -> None:
        """Store ``since`` and the given watermarks (other conversations keep theirs), in one transaction."""
        with self._lock:
            db = self._connect()
            with _transaction(db):
                db.execute(
                    "INSERT INTO accounts (account, since) VALUES (?, ?)"
                    " ON CONFLICT (account) DO UPDATE SET since = excluded.since",
                    (account, cursors.since),
                )
                if cursors.watermarks:
                    db.executemany(
                        "INSERT INTO watermarks (account, conversation, seq) VALUES (?, ?, ?)"
                        " ON CONFLICT (account, conversation) DO UPDATE SET seq = excluded.seq",
                        [(account, conversation, seq) for conversation, seq in cursors.watermarks.items()],
                    )

    def forget(self, account: str | None = None) -> None:
        """Remove one account's cursors, or every account's."""
        with self._lock:
            db = self._connect()
            where, args = ("WHERE account = ?", (account,)) if account is not None else ("", ())
            with _transaction(db):
                db.execute(f"DELETE FROM watermarks {where}", args)
                db.execute(f"DELETE FROM accounts {where}", args)

    def accounts(self) -> list[str]:
        """The accounts with saved cursors."""
        with self._lock:
            return [row[0] for row in self._connect().execute("SELECT account FROM accounts ORDER BY account")]

    def close(self) -> None:
        """Close the file (it is opened again when needed)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


class CursorKeeper:
    """A client's link between its sync engine and an optional :class:`CursorStore`.

    The shells call :meth:`ready` after each ``ready`` frame, :meth:`handed` with each batch of messages
    they are about to yield, and wrap each yield in :meth:`yielding`. Without a store, only the
    bookkeeping runs (a few dictionary operations per message).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        server_url: str,
        *,
        every: int = 32,
        manual: bool = False,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.on_ready = on_ready
        """Called after every ``ready`` frame (the bot framework lists pending notices then)."""
        self.store = CursorStore(path) if path is not None else None
        self.manual = manual
        """A message counts as seen only when :meth:`acknowledge` says so, not when it is yielded (the bot
        framework acknowledges a message once its handler finished), and each acknowledgement is saved."""
        self._server_url = server_url
        self._every = every
        self._account: str | None = None
        self._checkpoint: Checkpoint | None = None
        self._closed = False
        self.saves = 0
        """Transactions written (for tests and measurements)."""

    def ready(self, engine: SyncEngine, user_id: int, device_id: str) -> None:
        """A connection is ready; the first one restores what was saved for this account."""
        account = f"{self._server_url} {user_id} {device_id}"
        if self.on_ready is not None:
            self.on_ready()
        if self._checkpoint is not None and self._account == account:
            # A reconnect: what an earlier connection handed but never yielded will not be yielded. In
            # manual mode what was yielded may still be acknowledged later, so nothing is abandoned: the
            # saved cursor stays below whatever is not acknowledged, and a restart delivers it again.
            if self._checkpoint.waiting and not self.manual:
                self._checkpoint.abandon()
            return
        saved = None
        if self.store is not None:
            try:
                saved = self.store.load(account)
            except sqlite3.Error as exc:
                log.warning("cannot read sync state from %s: %s", self.store.path, exc)
            if saved is not None and (saved.watermarks or saved.since):
                engine.resume(saved.watermarks, saved.since)
                log.info("resuming %d conversations from %s", len(saved.watermarks), self.store.path)
        self._account = account
        self._checkpoint = Checkpoint(engine, saved, every=self._every)

    def handed(self, messages: Iterable[Message]) -> None:
        """The shell will yield these messages, in this order."""
        if self._checkpoint is not None:
            self._checkpoint.handed(messages)
            if self.manual:
                # Save at once a conversation seen for the first time, just below what it hands:
                # otherwise a restart would start it from the read position, which the application's
                # own replies move past the messages it has not finished with.
                self.flush()

    @contextlib.contextmanager
    def yielding(self, item: object) -> Iterator[None]:
        """Wraps one ``yield`` to the application: the item counts as given, and a due save runs when the
        application comes back for more or stops iterating."""
        checkpoint = self._checkpoint
        if checkpoint is not None and isinstance(item, Message) and not self.manual:
            checkpoint.yielded(item)
        try:
            yield
        except BaseException:  # the application stopped iterating (or threw into the generator)
            self.flush()
            raise
        if checkpoint is not None and checkpoint.due and not self.manual:
            self.flush()

    def acknowledge(self, message: Message) -> None:
        """In manual mode: the application is done with ``message``; save at once what that allows."""
        if self._checkpoint is not None:
            self._checkpoint.yielded(message)
            self.flush()

    def flush(self) -> None:
        """Save whatever is safe to save now (errors are logged: losing a save only costs re-yields)."""
        checkpoint, store, account = self._checkpoint, self.store, self._account
        if checkpoint is None or store is None or account is None or self._closed:
            return
        changes = checkpoint.changes()
        if changes is None:
            return
        try:
            store.save(account, changes)
        except sqlite3.Error as exc:
            log.warning("cannot save sync state to %s: %s", store.path, exc)
            return
        checkpoint.saved(changes)
        self.saves += 1

    def close(self) -> None:
        """Save what is left and close the file; later saves are skipped (the client is closed)."""
        self.flush()
        self._closed = True
        if self.store is not None:
            self.store.close()
