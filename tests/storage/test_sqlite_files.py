"""The SQLite database holds every message and password hash: its files are the owner's alone from the
start, whatever the process's umask."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from im_server.storage import Database

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


async def test_database_wal_and_shm_files_are_created_private(tmp_path: Path):
    previous = os.umask(0o022)  # a permissive umask: files would be world-readable by default
    try:
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'im.db'}")
        await db.migrate()
        try:
            names = ["im.db", "im.db-wal", "im.db-shm"]
            modes = {name: stat.S_IMODE((tmp_path / "data" / name).stat().st_mode) for name in names}
            assert modes == dict.fromkeys(names, 0o600)
            assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
        finally:
            await db.close()
    finally:
        os.umask(previous)
