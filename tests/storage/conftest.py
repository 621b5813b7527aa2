from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from im_server.storage import Database
from tests.conftest import PG_ADMIN_URL, PgDatabases


@pytest.fixture(scope="session")
def pg_storage_url(pg_available: bool) -> Iterator[str | None]:
    """One PostgreSQL database for the storage tests (``None`` when PostgreSQL is not reachable), emptied
    before each: creating and migrating a database costs more than most of the tests that use it."""
    if not pg_available:
        yield None
        return
    databases = PgDatabases()
    try:
        yield databases.create()
    finally:
        databases.drop_all()


def _empty(connection: Connection) -> None:
    """Every table of the schema emptied, its identities restarted (what a fresh database has)."""
    tables = connection.execute(
        text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")
    ).scalars()
    names = ", ".join(f'"{name}"' for name in tables)
    if names:
        connection.execute(text(f"TRUNCATE TABLE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgres"])
async def db(request: pytest.FixtureRequest, tmp_path: Path, pg_storage_url: str | None) -> AsyncIterator[Database]:
    """A migrated, empty database: SQLite (a new file), and PostgreSQL where it is reachable (the
    session's database, emptied)."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'im.db'}"
    elif pg_storage_url is None:
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    else:
        url = pg_storage_url
    database = Database(url)
    await database.migrate()
    if request.param == "postgres":
        await database.write(_empty)
    yield database
    await database.close()
