"""A gateway node: holds WebSocket connections and delivers what arrives on its own NATS subject."""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import secrets
from typing import Any

import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from im_schema.errors import ErrorCode
from im_schema.frames import ErrorFrame
from im_schema.limits import CLOSE_AUTH_TIMEOUT, CLOSE_GOING_AWAY, CLOSE_REPLACED

from ..bus.codec import decode_delivery
from ..bus.nats import Bus, RegistryMirror
from ..bus.subjects import route_key
from ..cluster.heartbeat import Heartbeat
from ..services.ratelimit import RateLimiter
from ..services.tokens import TokenCodec
from ..settings import Settings
from .barrier import RouteBarrier
from .session import Authenticated, Close, Forward, GatewaySession, Reply

__all__ = ["GatewayNode"]

log = logging.getLogger(__name__)

MAX_PENDING_SENDS = 256
"""Sends one connection may have waiting for the message service at once."""

Key = tuple[int, str]


class GatewayNode:
    """One gateway process; ``gateway_port=0`` picks a free port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node_id = settings.node_id or f"gw-{secrets.token_hex(4)}"
        self.bus = Bus(settings, name=self.node_id)
        self.mirror = RegistryMirror(self.bus, follow_routes=False)
        self.barrier = RouteBarrier(self.bus, self.mirror.nodes)
        self._tokens = TokenCodec(settings.signing_key())
        self._ip_limiter: RateLimiter[str] = RateLimiter(settings.connect_rate, settings.connect_burst)
        self.connections: dict[Key, ServerConnection] = {}
        self._revisions: dict[Key, int] = {}
        self._server: Server | None = None
        self._subscription: Subscription | None = None
        self._heartbeat: Heartbeat | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.url = settings.ws_url
        self.delivered = 0
        self._stopping = False

    # Lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the bus, purge routes left by an earlier run of this node id, then accept connections."""
        await self.bus.connect()
        await self.mirror.start()
        self.barrier.start()
        await self._purge_own_routes()
        self._subscription = await self.bus.nc.subscribe(self.bus.subjects.gateway(self.node_id), cb=self._on_delivery)
        self._server = await serve(
            self._handle,
            self.settings.gateway_host,
            self.settings.gateway_port,
            process_request=self._process_request,
            compression=None,
            max_size=self.settings.max_frame_bytes,
            max_queue=16,
            ping_interval=self.settings.ws_ping_interval,
            ping_timeout=self.settings.ws_ping_timeout,
            close_timeout=2,
            server_header=None,
        )
        if self.settings.gateway_public_url is None:
            host, port = next(iter(self._server.sockets)).getsockname()[:2]
            self.url = f"ws://{host}:{port}/ws"
        self._heartbeat = Heartbeat(
            self.bus, self.node_id, role="gateway", url=self.url, connections=lambda: len(self.connections)
        )
        await self._heartbeat.start()
        log.info("gateway %s listening on %s", self.node_id, self.url)

    async def _purge_own_routes(self) -> None:
        watcher = await self.bus.routes.watchall()
        stale = []
        try:
            async for entry in watcher:
                if entry is None:
                    break
                if entry.value and entry.value.decode() == self.node_id and entry.operation is None:
                    stale.append(entry.key)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves KeyWatcher.stop unannotated
        for key in stale:
            with contextlib.suppress(Exception):
                await self.bus.routes.delete(key)
        if stale:
            log.info("gateway %s: purged %d stale routes", self.node_id, len(stale))

    async def stop(self) -> None:
        """Leave the registry, tell every client to reconnect elsewhere, and remove their routes."""
        self._stopping = True
        if self._heartbeat is not None:
            await self._heartbeat.stop()
        if self._server is not None:
            self._server.close(close_connections=False)
        closing = [
            connection.close(CLOSE_GOING_AWAY, "node stopping; reconnect") for connection in self.connections.values()
        ]
        await asyncio.gather(*closing, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.unsubscribe()
        await self.barrier.stop()
        await self.mirror.stop()
        await self.bus.close()
        log.info("gateway %s stopped", self.node_id)

    async def serve_forever(self) -> None:
        """Run until cancelled."""
        assert self._server is not None
        await self._server.serve_forever()

    # HTTP side of the handshake -------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path == "/healthz":
            status = (
                http.HTTPStatus.OK
                if self.bus.nc.is_connected and not self._stopping
                else http.HTTPStatus.SERVICE_UNAVAILABLE
            )
            body = orjson.dumps(
                {"node_id": self.node_id, "connections": len(self.connections), "status": status.phrase}
            )
            response = connection.respond(status, body.decode() + "\n")
            response.headers["Content-Type"] = "application/json"
            return response
        if request.path != "/ws":
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found; connect to /ws\n")
        if self._stopping:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "node stopping; reconnect elsewhere\n")
        address = connection.remote_address[0] if connection.remote_address else "?"
        if self._ip_limiter.acquire(str(address)):
            return connection.respond(http.HTTPStatus.TOO_MANY_REQUESTS, "too many connections from your address\n")
        return None

    # Connections ----------------------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        session = GatewaySession(self._tokens, self.node_id)
        try:
            first = await asyncio.wait_for(connection.recv(), self.settings.auth_timeout)
        except TimeoutError:
            await connection.close(CLOSE_AUTH_TIMEOUT, "authenticate first")
            return
        except ConnectionClosed:
            return
        outcome = session.open(first)
        if isinstance(outcome, Close):
            await self._close(connection, outcome)
            return
        key = (outcome.user_id, outcome.device_id)
        if not await self._register(key, connection, outcome):
            return
        pipe = _SendPipe(self, connection, key)
        try:
            async for data in connection:
                action = session.receive(data)
                if isinstance(action, Reply):
                    await connection.send(action.data, text=True)
                elif isinstance(action, Forward):
                    pipe.push(action)
                else:
                    await self._close(connection, action)
                    break
        except ConnectionClosed:
            pass
        finally:
            await self._unregister(key, connection)

    async def _register(self, key: Key, connection: ServerConnection, outcome: Authenticated) -> bool:
        previous = self.connections.get(key)
        self.connections[key] = connection
        if previous is not None:
            self._spawn(previous.close(CLOSE_REPLACED, "the same device connected again"))
        try:
            revision = await self.bus.routes.put(route_key(*key), self.node_id.encode())
        except Exception as exc:
            log.warning("gateway %s: cannot register route %s: %s", self.node_id, key, exc)
            if self.connections.get(key) is connection:
                del self.connections[key]
            await connection.close(1011, "route registry unavailable; retry")
            return False
        self._revisions[key] = revision
        await self.barrier.wait(revision)
        try:
            await connection.send(outcome.ready, text=True)
        except ConnectionClosed:
            return True  # the finally clause of the caller unregisters
        return True

    async def _unregister(self, key: Key, connection: ServerConnection) -> None:
        if self.connections.get(key) is not connection:
            return  # replaced by a newer connection of the same device, which owns the route now
        del self.connections[key]
        revision = self._revisions.pop(key, None)
        try:
            # Only if nobody else registered the device meanwhile (on another node).
            await self.bus.routes.delete(route_key(*key), last=revision)
        except Exception as exc:
            log.debug("route %s not removed: %s", key, exc)

    async def _close(self, connection: ServerConnection, action: Close) -> None:
        with contextlib.suppress(ConnectionClosed):
            if action.data is not None:
                await connection.send(action.data, text=True)
            await connection.close(action.code, action.reason)

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def forward(self, key: Key, frames: list[bytes]) -> list[bytes]:
        """Hand one device's sends to the message service in one request; one answer frame per send."""
        payload = b"\n".join([orjson.dumps({"u": key[0], "d": key[1]}), *frames])
        try:
            reply = await self.bus.nc.request(self.bus.subjects.send, payload, timeout=10)
        except (NoRespondersError, NatsTimeout, TimeoutError) as exc:
            log.warning("gateway %s: sends not answered: %r", self.node_id, exc)
            return []
        return reply.data.split(b"\n")

    # Deliveries -----------------------------------------------------------------------------------

    async def _on_delivery(self, msg: Msg) -> None:
        try:
            items = decode_delivery(msg.data)
        except ValueError as exc:
            log.warning("gateway %s: bad delivery envelope: %s", self.node_id, exc)
            return
        connections = self.connections
        for frame, recipients in items:
            targets = [connection for key in recipients if (connection := connections.get(key)) is not None]
            if targets:
                broadcast(targets, frame, text=True)
                self.delivered += len(targets)

    def local_routes(self) -> list[Key]:
        """The devices connected here."""
        return list(self.connections)


class _SendPipe:
    """One connection's sends, forwarded in order: one request in flight, the rest batched behind it.

    Keeping a single request in flight per connection preserves the order in which a device sent its
    messages even when several API nodes share the work, and batching makes a busy connection cost one
    NATS round trip per batch instead of one per message.
    """

    def __init__(self, node: GatewayNode, connection: ServerConnection, key: Key) -> None:
        self._node = node
        self._connection = connection
        self._key = key
        self._pending: list[Forward] = []
        self._running = False

    def push(self, action: Forward) -> None:
        if len(self._pending) >= MAX_PENDING_SENDS:
            self._node._spawn(
                self._send([self._error(action, ErrorCode.RATE_LIMITED, "too many sends in flight", 0.1)])
            )
            return
        self._pending.append(action)
        if not self._running:
            self._running = True
            self._node._spawn(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_PENDING_SENDS], self._pending[MAX_PENDING_SENDS:]
                frames = [action.frame.model_dump_json(exclude_none=True).encode() for action in batch]
                answers = await self._node.forward(self._key, frames)
                if len(answers) != len(batch):
                    message = "no message service answered; retry with the same client_msg_id"
                    answers = [self._error(action, ErrorCode.UNAVAILABLE, message, 1.0) for action in batch]
                await self._send(answers)
        finally:
            self._running = False

    async def _send(self, frames: list[bytes]) -> None:
        with contextlib.suppress(ConnectionClosed):
            for frame in frames:
                await self._connection.send(frame, text=True)

    @staticmethod
    def _error(action: Forward, code: ErrorCode, message: str, retry_after: float) -> bytes:
        frame = ErrorFrame(
            code=code, message=message, client_msg_id=action.frame.client_msg_id, retry_after=retry_after
        )
        return frame.model_dump_json(exclude_none=True).encode()
