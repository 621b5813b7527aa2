"""The fuzz run needs one database, not both: PostgreSQL (what production runs) when it is reachable,
else SQLite. The API contract does not depend on the database; the storage contract suite
(tests/storage) runs on both. ``IM_FUZZ_DB=sqlite|postgres`` picks one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PgDatabases


@pytest.fixture
def db_url(tmp_path: Path, pg_available: bool) -> Iterator[str]:
    wanted = os.environ.get("IM_FUZZ_DB", "postgres" if pg_available else "sqlite")
    if wanted == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'im.db'}"
        return
    if not pg_available:
        pytest.skip("IM_FUZZ_DB=postgres, but PostgreSQL is not reachable")
    databases = PgDatabases()
    try:
        yield databases.create()
    finally:
        databases.drop_all()
