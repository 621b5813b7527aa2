from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from im_server.storage import Database


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """A migrated database: SQLite, and PostgreSQL where it is reachable."""
    database = Database(db_url)
    await database.migrate()
    yield database
    await database.close()
