"""A real cluster for tests: API node and gateway nodes in a background event loop, on real sockets.

The cluster runs in its own thread so that tests can drive it with the async SDK, the sync SDK or the
CLI alike, all through real HTTP and WebSocket connections.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import itertools
import os
import secrets
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from nats.aio.client import Client as NATS

from im_schema.social import SendFriendRequest
from im_sdk import AsyncClient, Backoff
from im_server.api.server import ApiServer
from im_server.cluster.natsbin import free_port, wait_for_port
from im_server.gateway.node import GatewayNode
from im_server.settings import Settings
from tests.support.nats import PrivateNats

T = TypeVar("T")

PASSWORD = "correct horse battery"
FAST = Backoff(initial=0.05, factor=2, max_delay=0.5)
_names = itertools.count(1)


class LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="cluster-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the loop and wait for it (from a plain thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the loop and await it (from another event loop)."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class TestCluster:
    """One API node and any number of gateway nodes sharing a fresh database and NATS prefix."""

    __test__ = False

    def __init__(self, loop: LoopThread, nats: PrivateNats, db_url: str, **overrides: Any) -> None:
        self.loop = loop
        self.nats = nats
        """The nats-server and its users: the API node connects as ``api``, gateways as ``gateway``."""
        values: dict[str, Any] = {
            **nats.settings("api"),
            "db_url": db_url,
            "subject_prefix": nats.prefix or f"t{secrets.token_hex(5)}",
            "secret_key": secrets.token_urlsafe(32),
            "api_host": "127.0.0.1",
            "api_port": 0,
            "gateway_host": "127.0.0.1",
            "gateway_port": 0,
            "argon2_time_cost": 1,
            "argon2_memory_cost": 1024,
            "argon2_parallelism": 1,
            "heartbeat_interval": 0.5,
            "node_ttl": 2.0,
            "send_rate": 10_000.0,
            "send_burst": 10_000,
            "connect_rate": 10_000.0,
            "connect_burst": 10_000,
            "register_rate": 10_000.0,
            "register_burst": 10_000,
            "ws_frame_rate": 10_000.0,
            "ws_frame_burst": 10_000,
            # Most tests are about delivery, not the social graph; tests of the friendship rule turn it on.
            "dm_requires_friendship": False,
            # Likewise for groups: anyone may add anyone; tests of consent set privacy or this explicitly.
            "group_invites_default": "everyone",
        }
        values.update(overrides)
        self.settings = Settings(**values)
        self.api: ApiServer | None = None
        self.extra_apis: list[ApiServer] = []
        self.gateways: list[GatewayNode] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        assert self.api is not None
        return self.api.url

    def start(self, gateways: int = 2) -> TestCluster:
        self.api = ApiServer(self.settings)
        self.loop.run(self.api.start())
        for _ in range(gateways):
            self.add_gateway()
        return self

    def add_api(self) -> ApiServer:
        """Another API node on the same database and NATS prefix."""
        api = ApiServer(self.settings)
        self.loop.run(api.start())
        self.extra_apis.append(api)
        return api

    def gateway_settings(self, node_id: str | None = None, **overrides: Any) -> Settings:
        """The settings of a gateway node: the cluster's, with the gateway role's NATS credentials.

        On a server with one user per gateway (and no shared one), a gateway without a ``node_id`` takes
        the first of those users no running gateway has.
        """
        users = self.nats.credentials.users
        if node_id is None and "gateway" not in users:
            taken = {node.node_id for node in self.gateways}
            node_id = next(name for name, user in users.items() if user.role == "gateway" and name not in taken)
        credentials = self.nats.settings("gateway", node_id)
        return self.settings.model_copy(update={**credentials, "node_id": node_id, **overrides})

    def add_gateway(self, **overrides: Any) -> GatewayNode:
        node = GatewayNode(self.gateway_settings(**overrides))
        self.loop.run(node.start())
        self.gateways.append(node)
        self.loop.run(self._until(lambda: self.api is not None and node.node_id in self.live_gateways()))
        return node

    def stop_gateway(self, node: GatewayNode) -> None:
        self.loop.run(node.stop())
        self.gateways.remove(node)

    def spawn_gateway_process(self, node_id: str) -> tuple[subprocess.Popen[bytes], str]:
        """A gateway in its own process (so that a test can kill it without any cleanup)."""
        port = free_port()
        env = {
            **os.environ,
            **self.env(self.gateway_settings(node_id)),
            "IM_NODE_ID": node_id,
            "IM_GATEWAY_PORT": str(port),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "im_server", "gateway"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(process)
        wait_for_port("127.0.0.1", port, process=process, timeout=30)
        self.loop.run(self._until(lambda: node_id in self.live_gateways(), timeout=30))
        return process, f"ws://127.0.0.1:{port}/ws"

    def env(self, settings: Settings | None = None) -> dict[str, str]:
        """The settings (the API node's unless given) as IM_* variables, for child processes."""
        settings = settings or self.settings
        out = {}
        for name, value in settings.model_dump().items():
            if value is None:
                continue
            if name == "secret_key":
                value = settings.signing_key().decode()
            out[f"IM_{name.upper()}"] = str(value)
        return out

    def live_gateways(self) -> list[str]:
        assert self.api is not None
        return [info.node_id for info in self.api.node.mirror.nodes.live("gateway")]

    async def _until(self, predicate: Callable[[], T], timeout: float = 10) -> T:
        async with asyncio.timeout(timeout):
            while not (value := predicate()):
                await asyncio.sleep(0.01)
            return value

    async def until(self, predicate: Callable[[], T], timeout: float = 10) -> T:
        """Wait, from a test, until ``predicate()`` (evaluated in the cluster's loop) is true; returns its value.

        The nodes' state changes in answer to NATS messages and has no event to wait on, so it is polled.
        """
        return await self.loop.call(self._until(predicate, timeout))

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(10)
        for node in list(self.gateways):
            self._stop_node(node.stop(), f"gateway {node.node_id}")
        for api in [*self.extra_apis, self.api]:
            if api is not None:
                self._stop_node(api.stop(), f"api {api.node.node_id}")
        with contextlib.suppress(Exception):
            self.loop.run(self._delete_buckets())

    def _stop_node(self, stop: Coroutine[Any, Any, None], name: str) -> None:
        """Run a node's ``stop()``; one that does not finish within a minute is reported (with what the
        cluster's loop was doing) as a warning, and the cluster's teardown goes on."""
        future = asyncio.run_coroutine_threadsafe(stop, self.loop.loop)
        try:
            future.result(60)
        except concurrent.futures.TimeoutError:
            stacks = io.StringIO()
            for task in asyncio.all_tasks(self.loop.loop):
                print(f"-- {task.get_name()}", file=stacks)
                task.print_stack(limit=6, file=stacks)
            warnings.warn(f"{name} did not stop within 60 s; the cluster's tasks:\n{stacks.getvalue()}", stacklevel=2)
        except Exception:
            pass  # a node that failed to start or already went away: nothing is left to stop

    async def observer(self) -> NATS:
        """A connection to the cluster's NATS that may watch and do anything (test servers only)."""
        return await self.nats.connect()

    async def _delete_buckets(self) -> None:
        nc = await self.nats.connect()
        try:
            js = nc.jetstream()
            names = ("routes", "nodes", "revoked", "access")
            for bucket in (f"{self.settings.subject_prefix}_{name}" for name in names):
                with contextlib.suppress(Exception):
                    await js.delete_key_value(bucket)
            with contextlib.suppress(Exception):
                await js.delete_object_store(f"{self.settings.subject_prefix}_files")
        finally:
            await nc.close()

    # Users ---------------------------------------------------------------------------------------

    async def user(
        self, name: str = "user", *, device: str = "dev1", api: ApiServer | None = None, **client_args: Any
    ) -> AsyncClient:
        """A registered, logged-in async client with a unique username (on ``api``, else the first node)."""
        username = f"{name}{next(_names)}{secrets.token_hex(2)}"
        client = AsyncClient((api or self.api).url, backoff=FAST, **client_args)  # type: ignore[union-attr]
        await client.register(username, PASSWORD)
        await client.login(username, PASSWORD, device=device)
        return client

    async def friends(self, a: AsyncClient, b: AsyncClient) -> None:
        """Make two users friends (a request each way)."""
        assert a.session is not None and b.session is not None
        await a.request(SendFriendRequest(to=b.session.user.id))
        await b.request(SendFriendRequest(to=a.session.user.id))

    async def device(self, of: AsyncClient, device: str, **client_args: Any) -> AsyncClient:
        """Another device of the same user."""
        assert of.session is not None
        client = AsyncClient(self.url, backoff=FAST, **client_args)
        await client.login(of.session.user.username, PASSWORD, device=device)
        return client
