"""A gateway node: holds WebSocket connections and delivers what arrives on its own NATS subject.

Healing: when the node's NATS connection comes back, or its heartbeat lands after a silence longer
than the node TTL (others may have judged it dead and removed its routes), or NATS drops pushes meant
for it (a slow consumer), it beats at once, puts back the routes of its connections and sends every
client a ``resync`` frame. Each connection has an outbound byte budget; a client that stops reading is
closed with 4013 (it reconnects and catches up by sync) instead of growing the node's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import math
import secrets
import time
import weakref
from collections.abc import Coroutine, Iterable
from typing import Any, cast

import orjson
import websockets.http11
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import NoRespondersError, SlowConsumerError
from nats.errors import TimeoutError as NatsTimeout
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from im_schema.errors import ErrorCode
from im_schema.frames import ErrorFrame, ResyncFrame, SyncFrame
from im_schema.limits import (
    CLOSE_AUTH_TIMEOUT,
    CLOSE_FLOODING,
    CLOSE_GOING_AWAY,
    CLOSE_REPLACED,
    CLOSE_SESSION_REVOKED,
    CLOSE_TOO_SLOW,
)

from .. import logs
from ..bus.codec import (
    MAX_SYNC_BATCH,
    SYNC_AGAIN,
    Ephemeral,
    PresenceChanged,
    SyncQuery,
    SyncRequest,
    TypingChanged,
    TypingState,
    decode_delivery,
    encode_event,
)
from ..bus.nats import Bus, RegistryMirror
from ..bus.revocations import Revocation
from ..bus.subjects import route_key
from ..cluster.access import AccessMirror
from ..cluster.drain import DRAIN
from ..cluster.exposition import MetricsListener
from ..cluster.heartbeat import Heartbeat
from ..cluster.metrics import SIZE_BUCKETS, Counter, LoopLagMonitor, Registry
from ..cluster.reaper import PROBE
from ..cluster.sessions import RevocationMirror
from ..cluster.trace import TraceResponder, TraceRing, frame_key
from ..services.access import client_address, metrics_allowed, parse_network
from ..services.ratelimit import RateLimiter, TokenBucket
from ..services.tokens import TokenCodec
from ..settings import Settings
from .barrier import RouteBarrier
from .connection import LeanConnection
from .keepalive import Keepalive
from .session import Authenticated, Close, Forward, GatewaySession, Reply, Sync, Typing

__all__ = ["GatewayNode"]

log = logging.getLogger(__name__)

MAX_PENDING_SENDS = 256
"""Sends one connection may have waiting for the message service at once."""
MAX_BATCH = 1024
"""The most sends forwarded in one request."""

SYNC_ANSWER_MAX_BYTES = 256 * 1024
"""The largest ``sync`` answer frame a gateway asks the API for (less if the outbound budget is small)."""

TOO_SLOW_CLOSE_TIMEOUT = 10.0
"""Seconds a connection past its outbound budget gets to read what is queued and the 4013 close frame."""
ROUTE_CONFIRM_ROUNDS = 10
"""Barrier rounds a gateway tries after ``ready`` for a route not every API node confirmed in time."""
RECOVERY_ROUNDS = 3
"""Barrier rounds (2 s each at most) a recovering gateway waits for any API node to answer before it
tells its clients to resync."""

Key = tuple[int, str]


class GatewayNode:
    """One gateway process; ``gateway_port=0`` picks a free port."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.node_id = settings.node_id or f"gw-{secrets.token_hex(4)}"
        self.bus = Bus(settings, name=self.node_id, role="gateway")
        self.mirror = RegistryMirror(self.bus, follow_routes=False)
        self.barrier = RouteBarrier(self.bus, self.mirror.nodes)
        self.revocations = RevocationMirror(self.bus, self.node_id, on_revoked=self._on_revoked)
        self._tokens = TokenCodec.from_ring(*settings.key_ring())
        self._ip_limiter: RateLimiter[str] = RateLimiter(settings.connect_rate, settings.connect_burst)
        self.access = AccessMirror(self.bus, self.node_id)
        self._proxies = tuple(parse_network(item) for item in settings.trusted_proxies)
        self.connections: dict[Key, ServerConnection] = {}
        self._sessions: dict[Key, str] = {}
        """The device session (token claim ``s``) of each connection in :attr:`connections`."""
        self._unready: set[ServerConnection] = set()
        """Connections in :attr:`connections` not told ``ready`` yet: nothing is pushed to them. A client
        reads ``ready`` (or an error) first; the catch-up it runs after ``ready`` fetches whatever a push
        skipped here carried (it was committed before)."""
        self._access_tokens: weakref.WeakKeyDictionary[ServerConnection, str] = weakref.WeakKeyDictionary()
        """The token each connection authenticated with: forwarded with its sends and events, the API
        takes the sender from it (NATS credentials alone cannot send as anybody)."""
        self.api = _ApiRequests(self)
        """Batches of sends and of syncs asked of the API nodes, retried until one answers."""
        self._forwarder = _Forwarder(self, settings.gateway_send_lanes, settings.gateway_max_queue_wait)
        self._syncer = _Syncer(self, settings.gateway_send_lanes, settings.gateway_max_queue_wait)
        self._revisions: dict[Key, int] = {}
        self._server: Server | None = None
        self._keepalive: Keepalive | None = None
        self._subscription: Subscription | None = None
        self._heartbeat: Heartbeat | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.url = settings.ws_url
        self.metrics = Registry()
        metrics = self.metrics
        self._delivered = metrics.counter("im_gateway_frames_delivered_total", "Pushed frames handed to connections.")
        self._frames_in = metrics.counter("im_gateway_frames_received_total", "Frames received from clients.")
        self._frames_out = metrics.counter(
            "im_gateway_frames_sent_total", "Frames written to clients (pushes, answers, errors, resyncs)."
        )
        self._errors = metrics.counter(
            "im_errors_total", "Error frames this gateway wrote itself, by error code.", ["code"]
        )
        self._forward_seconds = metrics.histogram(
            "im_gateway_forward_seconds", "Round trip of one batch of sends to the message service."
        )
        self._forward_size = metrics.histogram(
            "im_gateway_forward_batch_size", "Sends per request to the message service.", SIZE_BUCKETS
        )
        metrics.gauge("im_gateway_connections", "Authenticated connections.", lambda: len(self.connections))
        self._opened = metrics.counter("im_gateway_connections_opened_total", "Connections authenticated.")
        self._revoked_closes = metrics.counter(
            "im_gateway_revoked_connections_total", "Connections closed because their device was logged out."
        )
        self._loop_lag = LoopLagMonitor(
            metrics.histogram("im_event_loop_lag_seconds", "How late the event loop runs a scheduled callback.")
        )
        self._resyncs = metrics.counter(
            "im_gateway_resyncs_total", "Times this node told all its clients to resync (pushes may have been missed)."
        )
        self._too_slow = metrics.counter(
            "im_gateway_too_slow_closes_total", "Connections closed with 4013: past their outbound byte budget."
        )
        self._forward_attempts = metrics.histogram(
            "im_gateway_forward_attempts", "Attempts a batch of sends needed until an API node answered.", SIZE_BUCKETS
        )
        self._forward_attempts_max = 0
        self._syncs = metrics.counter("im_gateway_syncs_total", "Sync frames received from clients.")
        self._sync_seconds = metrics.histogram(
            "im_gateway_sync_seconds", "Round trip of one batch of sync frames to the API."
        )
        self._sync_size = metrics.histogram(
            "im_gateway_sync_batch_size", "Sync frames per request to the API.", SIZE_BUCKETS
        )
        self._forward_retries = metrics.counter(
            "im_gateway_forward_retries_total", "Batches of sends retried because no API node answered in time."
        )
        metrics.gauge(
            "im_gateway_outbound_bytes", "Bytes waiting to be written to all connections.", self._outbound_bytes
        )
        metrics.gauge(
            "im_nats_connected", "1 while this node is connected to NATS.", lambda: float(self.bus.nc.is_connected)
        )
        metrics.read_counter(
            "im_nats_reconnects_total",
            "Times this node's NATS connection came back.",
            lambda: self.bus.nc.stats["reconnects"],
        )
        metrics.read_counter(
            "im_registry_reloads_total",
            "Registry views reloaded after a NATS reconnect or a stall.",
            lambda: self.mirror.reloads,
        )
        metrics.read_counter(
            "im_registry_stalls_total",
            "Registry watchers found stalled (this node's heartbeat not shown) and made again.",
            lambda: self.mirror.stalls,
        )
        self._recovering: asyncio.Task[None] | None = None
        self._recover_again = False
        self._restored = False
        self._flood_closes = metrics.counter(
            "im_gateway_flooding_closes_total", "Connections closed for sending frames too fast."
        )
        self.metrics_listener = MetricsListener(self.metrics.render, settings)
        self.trace = TraceRing(settings.trace_capacity, settings.trace_devices)
        """The messages this node pushed lately, and to which devices (``im cluster trace``)."""
        self.tracer = TraceResponder(self.bus, self.node_id, "gateway", self.trace)
        self._stopping = False
        self.draining = False
        """An admin drains the node (``im cluster drain``): no new clients, the present ones sent away."""
        self.drained = asyncio.Event()
        self._emptied = asyncio.Event()
        """Set once a drain sent every client away: the process stops on it."""

    # Lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Join the bus, purge routes left by an earlier run of this node id, then accept connections."""
        logs.set_process_node(self.node_id)
        logs.node_id.set(self.node_id)
        await self.bus.connect()
        self.bus.listen(on_reconnect=self._on_bus_reconnect, on_error=self._on_bus_error)
        await self.mirror.start()
        await self.revocations.start()
        await self.access.start()
        self.barrier.start()
        await self._purge_own_routes()
        self._subscription = await self.bus.nc.subscribe(self.bus.subjects.gateway(self.node_id), cb=self._on_delivery)
        await self.tracer.start()
        _bound_handshake_heads(self.settings.max_header_bytes)
        self._server = await serve(
            self._handle,
            self.settings.gateway_host,
            self.settings.gateway_port,
            process_request=self._process_request,
            create_connection=LeanConnection,
            compression=None,
            max_size=self.settings.max_frame_bytes,
            max_queue=16,
            ping_interval=None,  # one task pings every connection (see keepalive.py), not one per connection
            ping_timeout=None,
            close_timeout=2,
            server_header=None,
            open_timeout=self.settings.header_timeout,
        )
        if self.settings.ws_ping_interval > 0:
            connections = self.connections
            self._keepalive = Keepalive(
                lambda: cast(Iterable[LeanConnection], connections.values()),  # served with create_connection
                interval=self.settings.ws_ping_interval,
                timeout=self.settings.ws_ping_timeout,
                close=self._ping_timed_out,
            )
            self._keepalive.start()
        await self.metrics_listener.start()
        if self.settings.gateway_public_url is None:
            host, port = next(iter(self._server.sockets)).getsockname()[:2]
            self.url = f"ws://{host}:{port}/ws"
        self._heartbeat = Heartbeat(
            self.bus,
            self.node_id,
            role="gateway",
            url=self.url,
            connections=lambda: len(self.connections),
            state=lambda: "draining" if self.draining else "serving",
            frames=self._frame_counts,
        )
        self._heartbeat.on_gap = lambda: self._schedule_recovery("heartbeat gap")
        self._heartbeat.on_written = self.mirror.beat_written
        self._heartbeat.on_failed = self.mirror.beat_failed
        await self._heartbeat.start()
        self._loop_lag.start()
        log.info("gateway %s listening on %s", self.node_id, self.url)

    # Healing ---------------------------------------------------------------------------------------

    def _on_bus_reconnect(self) -> None:
        self.api.link_back()
        if self._heartbeat is not None:
            self._heartbeat.beat_soon()
        self._schedule_recovery("bus reconnected")

    def _on_bus_error(self, exc: Exception) -> None:
        if isinstance(exc, SlowConsumerError) and exc.sub is self._subscription and self._subscription is not None:
            # NATS dropped pushes meant for this node's clients: they must pull what they missed.
            self._schedule_recovery("pushes dropped")

    def _schedule_recovery(self, reason: str) -> None:
        """Put back this node's routes, then tell every client to resync; coalesced while one runs."""
        if self._stopping:
            return
        if self._recovering is not None and not self._recovering.done():
            # One that has not put the routes back yet covers this cause too (a reconnect is followed at
            # once by the heartbeat gap it caused); one that has, runs again.
            self._recover_again = self._recover_again or self._restored
            return
        self._recovering = self._spawn(self._recover(reason))

    async def _recover(self, reason: str) -> None:
        while True:
            self._recover_again = False
            self._restored = False
            log.warning(
                "gateway %s: %s; restoring %d routes, clients resync", self.node_id, reason, len(self.connections)
            )
            marks: dict[str, int] = {}
            try:
                marks = await self._restore_routes()
                self._restored = True
            except Exception as exc:
                log.warning("gateway %s: routes not restored (%s); retrying", self.node_id, exc)
                await asyncio.sleep(0.2)
                self._recover_again = True
            self.resync_all(reason)
            if marks:
                await self._announce_resync(marks)
            if not self._recover_again or self._stopping:
                return

    async def _announce_resync(self, marks: dict[str, int]) -> None:
        """Tell the API nodes that every client here was told to resync after their answers with ``marks``.

        An API node that owes some of these devices a resync (pushes it published while NATS was away)
        needs to send none for what it remembered before its mark: the resync just sent comes after it.
        """
        notice = orjson.dumps({"resynced": self.node_id, "marks": marks})
        try:
            await self.bus.nc.publish(self.bus.subjects.barrier, notice)
        except Exception as exc:  # the API nodes then send their own resyncs: one more, nothing missed
            log.warning("gateway %s: resync not announced: %s", self.node_id, exc)

    async def _restore_routes(self) -> dict[str, int]:
        """Put back the routes of every connection; returns the marks of the API nodes that then
        confirmed them (see :mod:`.barrier`)."""
        # The registry may have lost them (an API node removed the routes of a node it judged dead, or
        # NATS lost its state): put each back, then wait until every API node routes to them again.
        keys = list(self.connections)
        revision = 0
        for start in range(0, len(keys), 256):
            chunk = keys[start : start + 256]
            revisions = await asyncio.gather(
                *(self.bus.routes.put(route_key(*key), self.node_id.encode()) for key in chunk)
            )
            for key, value in zip(chunk, revisions, strict=True):
                if key in self.connections:
                    # The device is here (maybe on a newer connection): the route is right, keep its revision.
                    self._revisions[key] = max(self._revisions.get(key, 0), value)
                else:
                    # It went away while we were putting: do not leave our put behind.
                    with contextlib.suppress(Exception):
                        await self.bus.routes.delete(route_key(*key), last=value)
                revision = max(revision, value)
        if not revision:
            return {}
        for _ in range(RECOVERY_ROUNDS):
            _, marks = await self.barrier.marks(revision)
            if marks:
                return marks
            # Nobody answered: the API nodes are not back on the bus yet. Their answers (and marks) let
            # them drop the resyncs they owe these clients, which the one sent after this covers.
        return {}

    def resync_all(self, reason: str) -> None:
        """Send every connected client a ``resync`` frame."""
        targets = [connection for connection in self.connections.values() if connection not in self._unready]
        if targets:
            frame = ResyncFrame(reason=reason).model_dump_json().encode()
            self._too_slow_close(fan_out(targets, frame, self.settings.gateway_outbound_budget))
            self._frames_out.inc(len(targets))
        self._resyncs.inc()

    def _too_slow_close(self, connections: list[ServerConnection]) -> None:
        for connection in connections:
            if connection.close_timeout == TOO_SLOW_CLOSE_TIMEOUT:
                continue  # already being closed (a second close would abort it at once)
            self._too_slow.inc()
            log.info("gateway %s: closing a connection past its outbound budget", self.node_id)
            # Nothing more is written to it (it is closing); the close frame waits behind the bytes already
            # queued, so a client that is slow rather than gone gets a while to read them and see 4013.
            connection.close_timeout = TOO_SLOW_CLOSE_TIMEOUT
            self._spawn(connection.close(CLOSE_TOO_SLOW, "too slow reading; reconnect and resync"))

    def _ping_timed_out(self, connection: ServerConnection) -> None:
        log.info("gateway %s: closing a connection that did not answer a ping", self.node_id)
        self._spawn(connection.close(1011, "keepalive ping timeout"))

    def _frame_counts(self) -> tuple[float, float]:
        """Frames received from and written to clients since start (for the heartbeat's rates)."""
        return (
            self.metrics.value("im_gateway_frames_received_total"),
            self.metrics.value("im_gateway_frames_sent_total"),
        )

    def _outbound_bytes(self) -> float:
        total = 0
        for connection in self.connections.values():
            transport = connection.transport
            if transport is not None and not transport.is_closing():
                total += transport.get_write_buffer_size()
        return total

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
        if self._keepalive is not None:
            await self._keepalive.stop()
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
        await self.tracer.stop()
        await self.barrier.stop()
        await self.revocations.stop()
        await self.access.stop()
        await self.metrics_listener.stop()
        await self._loop_lag.stop()
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
            return self._healthz(connection)
        peer = connection.remote_address[0] if connection.remote_address else None
        address = client_address(peer, request.headers.get_all("X-Forwarded-For"), self._proxies)
        if not self.access.rules.admits(address):
            return connection.respond(http.HTTPStatus.FORBIDDEN, "your network address is not allowed here\n")
        if request.path == "/metrics":
            # Only with the metrics token; otherwise it is served on IM_METRICS_PORT alone (if set).
            token = self.settings.metrics_token.get_secret_value() if self.settings.metrics_token else None
            if token is None:
                return connection.respond(http.HTTPStatus.NOT_FOUND, "not found; connect to /ws\n")
            if not metrics_allowed(token, request.headers.get("Authorization")):
                response = connection.respond(http.HTTPStatus.UNAUTHORIZED, "the metrics token is missing or wrong\n")
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
            response = connection.respond(http.HTTPStatus.OK, self.metrics.render())
            response.headers["Content-Type"] = "text/plain; version=0.0.4"
            return response
        if request.path != "/ws":
            return connection.respond(http.HTTPStatus.NOT_FOUND, "not found; connect to /ws\n")
        if self._stopping or self.draining:
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "node stopping; reconnect elsewhere\n")
        if wait := self._ip_limiter.acquire(address):
            response = connection.respond(http.HTTPStatus.TOO_MANY_REQUESTS, "too many connections from your address\n")
            response.headers["Retry-After"] = str(max(1, math.ceil(min(wait, 3600.0))))
            return response
        return None

    def _healthz(self, connection: ServerConnection) -> Response:
        """200 when every dependency is fine, else 503 with what is degraded."""
        heartbeat = self._heartbeat
        beat_age = None if heartbeat is None or heartbeat.last_ok is None else time.monotonic() - heartbeat.last_ok
        checks = {
            "nats": self.bus.nc.is_connected,
            "registries": self.mirror.current,
            "heartbeat": beat_age is not None and beat_age < self.settings.node_ttl,
            "accepting": not (self._stopping or self.draining),
        }
        healthy = all(checks.values())
        status = http.HTTPStatus.OK if healthy else http.HTTPStatus.SERVICE_UNAVAILABLE
        body = {
            "status": "ok" if healthy else "degraded",  # as an API node's /healthz says
            "node_id": self.node_id,
            "connections": len(self.connections),
            "checks": checks,
            "degraded": [name for name, ok in checks.items() if not ok],
            "heartbeat_age": None if beat_age is None else round(beat_age, 3),
        }
        response = connection.respond(status, orjson.dumps(body).decode() + "\n")
        response.headers["Content-Type"] = "application/json"
        return response

    # Connections ----------------------------------------------------------------------------------

    async def _handle(self, connection: ServerConnection) -> None:
        logs.node_id.set(self.node_id)
        logs.connection_id.set(str(connection.id))
        session = GatewaySession(self._tokens, self.node_id, revoked=self.revocations.is_revoked)
        try:
            async with asyncio.timeout(self.settings.auth_timeout):
                first = await connection.recv()
        except TimeoutError:
            await connection.close(CLOSE_AUTH_TIMEOUT, "authenticate first")
            return
        except ConnectionClosed:
            return
        self._frames_in.inc()
        outcome = session.open(first)
        if isinstance(outcome, Close):
            await self._close(connection, outcome)
            return
        key = (outcome.user_id, outcome.device_id)
        self._access_tokens[connection] = outcome.token
        if not await self._register(key, connection, outcome):
            return
        self._opened.inc()
        log.debug("connection of user %d device %s opened", key[0], key[1])
        # This frame lives as long as the connection: keep nothing the loop below does not use (the auth
        # frame's text and the ready frame's bytes are most of a connection's own state).
        del first, outcome
        frames = TokenBucket(self.settings.ws_frame_rate, self.settings.ws_frame_burst)
        refused = 0
        frames_in, frames_out = self._frames_in, self._frames_out
        try:
            async for data in connection:
                frames_in.inc()
                if wait := frames.take():
                    # Told to slow down each time; a client that keeps on regardless is cut off.
                    refused += 1
                    if refused > self.settings.ws_flood_limit:
                        self._flood_closes.inc()
                        await connection.close(CLOSE_FLOODING, "too many frames; slow down")
                        break
                    self._errors.labels(ErrorCode.RATE_LIMITED.value).inc()
                    frames_out.inc()
                    await connection.send(session.slow_down(data, max(0.001, round(wait, 3))), text=True)
                    continue
                refused = 0
                action = session.receive(data)
                if isinstance(action, Reply):
                    frames_out.inc()
                    await connection.send(action.data, text=True)
                elif isinstance(action, Forward):
                    self._forwarder.push(connection, key, action)
                elif isinstance(action, Sync):
                    self._syncs.inc()
                    self._syncer.push(connection, action.frame)
                elif isinstance(action, Typing):
                    self._ephemeral(
                        connection, TypingState(conversation=action.frame.conversation, active=action.frame.active)
                    )
                else:
                    await self._close(connection, action)
                    break
        except ConnectionClosed:
            pass
        finally:
            await self._unregister(key, connection)
            log.debug("connection of user %d device %s closed (%s)", key[0], key[1], connection.close_code)

    async def _register(self, key: Key, connection: ServerConnection, outcome: Authenticated) -> bool:
        previous = self.connections.get(key)
        # Set before the first await: a revocation applied from now on finds and closes this connection,
        # and one applied earlier was refused by the session.
        self.connections[key] = connection
        self._sessions[key] = outcome.session_id
        self._unready.add(connection)
        if previous is not None:
            self._spawn(previous.close(CLOSE_REPLACED, "the same device connected again"))
        try:
            revision = await self.bus.routes.put(route_key(*key), self.node_id.encode())
        except Exception as exc:
            log.warning("gateway %s: cannot register route %s: %s", self.node_id, key, exc)
            self._unready.discard(connection)
            if self.connections.get(key) is connection:
                del self.connections[key]
                self._sessions.pop(key, None)
            await connection.close(1011, "route registry unavailable; retry")
            return False
        self._revisions[key] = revision
        confirmed = await self.barrier.wait(revision)
        try:
            self._frames_out.inc()
            await connection.send(outcome.ready, text=True)
        except ConnectionClosed:
            return True  # the finally clause of the caller unregisters
        self._unready.discard(connection)
        if not confirmed:
            self._spawn(self._confirm_route(key, connection, revision))
        self._ephemeral(connection, online=True)
        return True

    async def _confirm_route(self, key: Key, connection: ServerConnection, revision: int) -> None:
        """A device was made ready before every API node confirmed its route: a message committed in
        between may have been pushed nowhere. Once a barrier round is answered (or after a few rounds),
        the device is told to sync again; its sync finds whatever it missed."""
        for _ in range(ROUTE_CONFIRM_ROUNDS):
            if self.connections.get(key) is not connection or self._stopping:
                return
            if await self.barrier.wait(revision):
                break
        if self.connections.get(key) is connection:
            frame = ResyncFrame(reason="route confirmed late").model_dump_json().encode()
            self._too_slow_close(fan_out([connection], frame, self.settings.gateway_outbound_budget))
            self._frames_out.inc()

    async def _unregister(self, key: Key, connection: ServerConnection) -> None:
        self._unready.discard(connection)
        if self.connections.get(key) is not connection:
            return  # replaced by a newer connection of the same device, which owns the route now
        del self.connections[key]
        self._sessions.pop(key, None)
        revision = self._revisions.pop(key, None)
        try:
            # Only if nobody else registered the device meanwhile (on another node). Without a revision (the
            # put was cut off) nothing is deleted: an unconditional delete could remove another node's route;
            # a route of ours left behind is purged when this node stops or is reaped when it dies.
            if revision is not None:
                await self.bus.routes.delete(route_key(*key), last=revision)
        except Exception as exc:
            log.debug("route %s not removed: %s", key, exc)
            return
        finally:
            if self.draining and not self.connections:
                self._emptied.set()
        self._ephemeral(connection, online=False)

    def _ephemeral(
        self, connection: ServerConnection, typing: TypingState | None = None, *, online: bool = False
    ) -> None:
        """Typing (when ``typing`` is given) or presence go to one API node, no answer expected; losing one
        is harmless. The event carries the connection's access token: the API takes user and device from it.
        """
        if self._stopping:
            return  # a stopping node's clients come back elsewhere within seconds
        token = self._access_tokens.get(connection, "")
        event: Ephemeral = (
            TypingChanged(t=token, typing=typing) if typing is not None else PresenceChanged(t=token, online=online)
        )
        payload = encode_event(event)
        self._spawn(self.bus.nc.publish(self.bus.subjects.ephemeral, payload))

    async def _close(self, connection: ServerConnection, action: Close) -> None:
        with contextlib.suppress(ConnectionClosed):
            if action.data is not None:
                self._frames_out.inc()
                await connection.send(action.data, text=True)
            await connection.close(action.code, action.reason)

    def _on_revoked(self, revocation: Revocation) -> None:
        key = (revocation.user_id, revocation.device_id)
        connection = self.connections.get(key)
        if connection is None or self._sessions.get(key) != revocation.session_id:
            return  # not here, or a newer session of the device (whose login revoked this one)
        log.info("gateway %s: closing %s: logged out", self.node_id, key)
        self._revoked_closes.inc()
        self._spawn(connection.close(CLOSE_SESSION_REVOKED, "this device was logged out"))

    def _spawn(self, coroutine: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, deadline: float = 30.0) -> None:
        """Send every client elsewhere (see :mod:`im_server.cluster.drain`), then set :attr:`drained`.

        The heartbeat says ``draining`` before any client is closed, so that API nodes assign the
        reconnecting devices to other gateways; a client that still comes here is refused (503) and tries
        again. Clients that outlive ``deadline`` seconds are left to :meth:`stop`.
        """
        if self.draining or self._stopping:
            return
        self.draining = True
        log.info("gateway %s: draining %d connections", self.node_id, len(self.connections))
        if self._heartbeat is not None:
            with contextlib.suppress(Exception):
                await self._heartbeat.beat()
        closing = [
            connection.close(CLOSE_GOING_AWAY, "node draining; reconnect elsewhere")
            for connection in list(self.connections.values())
        ]
        await asyncio.gather(*closing, return_exceptions=True)
        if self.connections:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline):
                    await self._emptied.wait()
        log.info("gateway %s: drained (%d connections left)", self.node_id, len(self.connections))
        self.drained.set()

    # Deliveries -----------------------------------------------------------------------------------

    async def _on_delivery(self, msg: Msg) -> None:
        if msg.data == PROBE:
            return  # an API node checking that this node still subscribes (see cluster/reaper.py)
        if msg.reply or msg.headers:
            # API nodes publish deliveries plainly. Whoever may read a stream can have JetStream deliver
            # its messages to any subject, but those always carry a reply subject or headers.
            log.warning("gateway %s: dropped a delivery that no API node sent", self.node_id)
            return
        if msg.data == DRAIN:
            self._spawn(self.drain())
            return
        try:
            items = decode_delivery(msg.data)
        except ValueError as exc:
            log.warning("gateway %s: bad delivery envelope: %s", self.node_id, exc)
            return
        connections = self.connections
        unready = self._unready
        budget = self.settings.gateway_outbound_budget
        if len(items) == 1:
            frame, recipients = items[0]
            targets = [connection for key in recipients if (connection := connections.get(key)) is not None]
            if unready:
                targets = [connection for connection in targets if connection not in unready]
            if targets:
                self._too_slow_close(fan_out(targets, frame, budget))
                self._delivered.inc(len(targets))
                self._frames_out.inc(len(targets))
                if self.trace.capacity and (found := frame_key(frame)) is not None:
                    listed = (key for key in recipients if key in connections)
                    self.trace.pushed(found[1], listed, len(targets))
            return
        # Several frames (a group commit's messages): each connection gets all of its frames in one write.
        per_connection: dict[ServerConnection, list[bytes]] = {}
        delivered = 0
        for frame, recipients in items:
            encoded: bytes | None = None
            count = 0
            for key in recipients:
                connection = connections.get(key)
                if connection is None or connection in unready:
                    continue
                if encoded is None:
                    encoded = text_frame(frame)
                frames = per_connection.get(connection)
                if frames is None:
                    per_connection[connection] = [encoded]
                else:
                    frames.append(encoded)
                count += 1
            delivered += count
            if count and self.trace.capacity and (found := frame_key(frame)) is not None:
                self.trace.pushed(found[1], (key for key in recipients if key in connections), count)
        if per_connection:
            self._too_slow_close(write_frames(per_connection, budget))
            self._delivered.inc(delivered)
            self._frames_out.inc(delivered)


class _ApiRequests:
    """Batches a gateway asks of the API nodes over NATS (sends, syncs), asked again until one answers.

    Each attempt waits ``timeout`` at most, then the same payload goes out again: the queue group hands
    it to any live API node, so a dead or stuck node costs the batch one attempt, not the whole deadline
    (a send carries its ``client_msg_id``, so a second arrival of a stored one is harmless; a sync is a
    read). Attempts go on until ``gateway_forward_deadline`` has passed since the first, and stop after
    one once the node is stopping. While NATS is away no attempt is made: the batch waits for the link,
    and when it comes back (:meth:`link_back`) a request in flight, which may have been lost with the
    old link, is asked again at once rather than after its timeout.
    """

    def __init__(self, node: GatewayNode) -> None:
        self._node = node
        self._link = asyncio.Event()
        """Set (and replaced) when the NATS connection comes back."""

    def link_back(self) -> None:
        """The NATS connection came back."""
        self._link.set()
        self._link = asyncio.Event()

    async def ask(
        self,
        subject: str,
        payload: bytes,
        count: int,
        *,
        attempt_timeout: float,
        what: str,
        retries: Counter | None = None,
    ) -> tuple[list[bytes], int] | None:
        """The ``count`` answers (one line each) to ``payload`` and the attempts they took, or ``None``
        when no API node answered them in time.

        ``attempt_timeout`` bounds one attempt, ``what`` names the batch in the log, and ``retries``
        counts the attempts no API node answered.
        """
        node = self._node
        deadline = time.perf_counter() + node.settings.gateway_forward_deadline
        attempt = 0
        while True:
            attempt += 1
            left = deadline - time.perf_counter()
            if left <= 0 or (node._stopping and attempt > 1):
                return None
            link = self._link
            if not node.bus.nc.is_connected:
                if node._stopping:
                    return None  # the link would not be back before the node is gone
                # Nothing would answer before the link is back: wait for it rather than for a timeout.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await link.wait()
                continue
            try:
                reply = await _unless(link, node.bus.nc.request(subject, payload, timeout=min(attempt_timeout, left)))
                if reply is None:
                    log.info("gateway %s: NATS is back; asking for %s again", node.node_id, what)
                    continue
            except (NoRespondersError, NatsTimeout, TimeoutError) as exc:
                if retries is not None:
                    retries.inc()
                log.warning("gateway %s: %s not answered (attempt %d): %r", node.node_id, what, attempt, exc)
                if isinstance(exc, NoRespondersError) or not node.bus.nc.is_connected:
                    await asyncio.sleep(min(0.05 * attempt, 0.5))  # nobody to ask yet: do not spin
                continue
            except Exception as exc:
                # The connection is closed or draining (the node is stopping): answer at once.
                log.warning("gateway %s: %s not forwarded: %r", node.node_id, what, exc)
                return None
            answers = reply.data.split(b"\n")
            if len(answers) == count:
                return answers, attempt
            log.warning("gateway %s: %d answers for %d %s", node.node_id, len(answers), count, what)
            return None


class _Forwarder:
    """Sends of every connection, forwarded in batches with several requests in flight at once.

    Each request carries a batch: whatever was waiting when a request slot came free. Per-connection
    order holds because a connection has sends in at most one request at a time: the sends it makes
    while one is in flight wait for the next batch, which is taken as soon as that request is answered,
    even when several API nodes share the work. Other connections' sends do not wait for it: they go out
    in another request. Batching makes a busy gateway cost one NATS round trip per batch, not per message.
    """

    def __init__(self, node: GatewayNode, in_flight: int, max_wait: float) -> None:
        self._node = node
        self._in_flight = in_flight
        self._max_wait = max_wait
        self._pending: list[tuple[ServerConnection, Key, Forward]] = []
        self._arrived: list[float] = []
        """When each send of :attr:`_pending` arrived (``time.monotonic``)."""
        self._per_connection: dict[Key, int] = {}
        self._busy: set[Key] = set()
        """Connections with sends in a request in flight."""
        self._running = 0

    def push(self, connection: ServerConnection, key: Key, action: Forward) -> None:
        waiting = self._per_connection.get(key, 0)
        if waiting >= MAX_PENDING_SENDS:
            answer = _error_frame(action, ErrorCode.RATE_LIMITED, "too many sends in flight", 0.1)
            self._node._errors.labels(ErrorCode.RATE_LIMITED.value).inc()
            self._node._frames_out.inc()
            broadcast([connection], answer, text=True)
            return
        now = time.monotonic()
        if self._running >= self._in_flight and self._arrived and (waited := now - self._arrived[0]) > self._max_wait:
            # Every request slot is taken and sends keep waiting: the message service is behind. Refuse now
            # (the SDK retries with the same client_msg_id) instead of queueing for many seconds.
            retry_after = round(min(2.0, max(0.1, waited)), 3)
            answer = _error_frame(action, ErrorCode.UNAVAILABLE, "the server is busy; retry later", retry_after)
            self._node._errors.labels(ErrorCode.UNAVAILABLE.value).inc()
            self._node._frames_out.inc()
            broadcast([connection], answer, text=True)
            return
        self._per_connection[key] = waiting + 1
        self._pending.append((connection, key, action))
        self._arrived.append(now)
        if self._running < self._in_flight:
            self._dispatch()

    def _dispatch(self) -> None:
        while self._pending and self._running < self._in_flight:
            busy = self._busy
            batch: list[tuple[ServerConnection, Key, Forward]] = []
            keep: list[tuple[ServerConnection, Key, Forward]] = []
            kept: list[float] = []
            joined: set[Key] = set()
            for item, arrived in zip(self._pending, self._arrived, strict=True):
                key = item[1]
                if len(batch) < MAX_BATCH and (key in joined or key not in busy):
                    batch.append(item)
                    joined.add(key)
                else:
                    keep.append(item)
                    kept.append(arrived)
            if not batch:
                return  # every waiting send belongs to a connection with a request in flight
            self._pending, self._arrived = keep, kept
            busy.update(joined)
            self._running += 1
            self._node._spawn(self._send(batch, joined))

    async def _send(self, batch: list[tuple[ServerConnection, Key, Forward]], keys: set[Key]) -> None:
        try:
            answers = await self._forward(batch)
            trace = self._node.trace
            per_connection: dict[ServerConnection, list[bytes]] = {}
            for (connection, key, _), answer in zip(batch, answers, strict=True):
                if trace.capacity and (found := frame_key(answer)) is not None and found[0] == "ack":
                    trace.pushed(found[1], [key], 1, "ack")
                frames = per_connection.get(connection)
                if frames is None:
                    per_connection[connection] = [text_frame(answer)]
                else:
                    frames.append(text_frame(answer))
            write_frames(per_connection)  # answers only: no budget, the client is waiting for them
            self._node._frames_out.inc(len(batch))

        finally:
            counts = self._per_connection
            for _, key, _ in batch:
                left = counts[key] - 1
                if left:
                    counts[key] = left
                else:
                    del counts[key]
            self._busy.difference_update(keys)
            self._running -= 1
            self._dispatch()

    async def _forward(self, batch: list[tuple[ServerConnection, Key, Forward]]) -> list[bytes]:
        # ``{"tokens": [access token, ...], "sends": [[token index, send frame], ...]}``: each connection's
        # token once; the API verifies it and takes the sender from it. Frames are re-encoded from the
        # validated model (nulls and defaults included: cheaper than leaving them out): the message service
        # never sees client bytes.
        node = self._node
        tokens: list[str] = []
        indexes: dict[ServerConnection, int] = {}
        sends: list[bytes] = []
        for connection, _, action in batch:
            index = indexes.get(connection)
            if index is None:
                index = indexes[connection] = len(tokens)
                tokens.append(node._access_tokens.get(connection, ""))
            frame = action.frame
            sends.append(b"[%d,%b]" % (index, frame.__pydantic_serializer__.to_json(frame)))
        payload = b'{"tokens":%b,"sends":[%b]}' % (orjson.dumps(tokens), b",".join(sends))
        node._forward_size.observe(len(batch))
        started = time.perf_counter()
        asked = await node.api.ask(
            node.bus.subjects.send,
            payload,
            len(batch),
            attempt_timeout=node.settings.gateway_forward_timeout,
            what="sends",
            retries=node._forward_retries,
        )
        if asked is not None:
            answers, attempts = asked
            node._forward_seconds.observe(time.perf_counter() - started)
            node._forward_attempts.observe(attempts)
            node._forward_attempts_max = max(node._forward_attempts_max, attempts)
            return answers
        message = "no message service answered; retry with the same client_msg_id"
        node._errors.labels(ErrorCode.UNAVAILABLE.value).inc(len(batch))
        return [_error_frame(action, ErrorCode.UNAVAILABLE, message, 1.0) for _, _, action in batch]


class _Syncer:
    """``sync`` frames of every connection, asked of the API in batches.

    A connection has at most one sync waiting or in flight: a second one is refused (``rate_limited``,
    with its ``id``) until the first is answered. Whatever waits when a request slot comes free goes in
    one request (at most :data:`~im_server.bus.codec.MAX_SYNC_BATCH`), with up to ``in_flight``
    requests at once; so a storm of devices reconnecting to this node costs the API one NATS request
    per batch instead of one HTTP request per device. When every slot is taken and syncs have waited
    longer than ``max_wait``, new ones are refused with ``unavailable`` and a ``retry_after`` (not while
    NATS is away: then every sync waits for it, and is asked as soon as it is back, see :class:`_ApiRequests`).

    Answers are written within the connection's outbound budget (a client past it is closed with 4013,
    as for pushes); the API keeps each answer under :data:`SYNC_ANSWER_MAX_BYTES`.
    """

    def __init__(self, node: GatewayNode, in_flight: int, max_wait: float) -> None:
        self._node = node
        self._in_flight = in_flight
        self._max_wait = max_wait
        self._pending: list[tuple[ServerConnection, SyncFrame, float]] = []
        """Waiting syncs, each with when it arrived (``time.monotonic``)."""
        self._active: set[ServerConnection] = set()
        """Connections with a sync waiting or in flight."""
        self._running = 0

    def push(self, connection: ServerConnection, frame: SyncFrame) -> None:
        """Ask for ``frame`` on behalf of ``connection``'s device, or refuse it at once."""
        if connection in self._active:
            self._refuse(connection, frame, ErrorCode.RATE_LIMITED, "a sync is already in flight; wait for it", 0.5)
            return
        now = time.monotonic()
        if (
            self._running >= self._in_flight
            and self._pending
            and (waited := now - self._pending[0][2]) > self._max_wait
            and self._node.bus.nc.is_connected  # without NATS all wait for it (one each): then asked at once
        ):
            retry_after = round(min(2.0, max(0.1, waited)), 3)
            self._refuse(connection, frame, ErrorCode.UNAVAILABLE, "the server is busy; retry later", retry_after)
            return
        self._active.add(connection)
        self._pending.append((connection, frame, now))
        self._dispatch()

    def _refuse(
        self, connection: ServerConnection, frame: SyncFrame, code: ErrorCode, message: str, retry_after: float
    ) -> None:
        answer = ErrorFrame(code=code, message=message, id=frame.id, retry_after=retry_after)
        self._node._errors.labels(code.value).inc()
        self._node._frames_out.inc()
        broadcast([connection], answer.model_dump_json(exclude_none=True), text=True)

    def _dispatch(self) -> None:
        while self._pending and self._running < self._in_flight:
            batch: list[tuple[ServerConnection, SyncFrame]] = []
            taken = 0
            for connection, frame, _ in self._pending:
                taken += 1
                if connection.protocol.state is State.OPEN:
                    batch.append((connection, frame))
                else:
                    self._active.discard(connection)  # gone: nobody is waiting for its answer
                if len(batch) == MAX_SYNC_BATCH:
                    break
            del self._pending[:taken]
            if batch:
                self._running += 1
                self._node._spawn(self._send(batch))

    async def _send(self, batch: list[tuple[ServerConnection, SyncFrame]]) -> None:
        node = self._node
        again: list[tuple[ServerConnection, SyncFrame, float]] = []
        try:
            answers = await self._forward(batch)
            per_connection: dict[ServerConnection, list[bytes]] = {}
            for (connection, frame), answer in zip(batch, answers, strict=True):
                if answer == SYNC_AGAIN:
                    again.append((connection, frame, time.monotonic()))
                else:
                    per_connection[connection] = [text_frame(answer)]
            node._too_slow_close(write_frames(per_connection, node.settings.gateway_outbound_budget))
            node._frames_out.inc(len(per_connection))
        finally:
            waiting = {connection for connection, _, _ in again}
            for connection, _ in batch:
                if connection not in waiting:
                    self._active.discard(connection)
            self._pending[0:0] = again  # first in the next request: they have waited longest
            self._running -= 1
            self._dispatch()

    def _max_bytes(self) -> int:
        node = self._node
        limit = min(SYNC_ANSWER_MAX_BYTES, node.settings.gateway_outbound_budget // 2)
        max_payload = node.bus.nc.max_payload
        if max_payload:
            limit = min(limit, max_payload // 2)
        return max(16 * 1024, limit)

    async def _forward(self, batch: list[tuple[ServerConnection, SyncFrame]]) -> list[bytes]:
        # Each connection's access token goes along (the API takes the device from it); the query is
        # rebuilt from the validated frame, so the API never sees client bytes.
        node = self._node
        tokens: list[str] = []
        syncs: list[SyncQuery] = []
        for index, (connection, frame) in enumerate(batch):
            tokens.append(node._access_tokens.get(connection, ""))
            syncs.append(SyncQuery.model_construct(t=index, id=frame.id, q=frame.request()))
        payload = encode_event(SyncRequest.model_construct(tokens=tokens, syncs=syncs, max_bytes=self._max_bytes()))
        node._sync_size.observe(len(batch))
        started = time.perf_counter()
        asked = await node.api.ask(
            node.bus.subjects.sync,
            payload,
            len(batch),
            attempt_timeout=node.settings.gateway_sync_timeout,
            what="syncs",
        )
        if asked is not None:
            node._sync_seconds.observe(time.perf_counter() - started)
            return asked[0]
        node._errors.labels(ErrorCode.UNAVAILABLE.value).inc(len(batch))
        message = "no API node answered; sync again later"
        return [
            ErrorFrame(code=ErrorCode.UNAVAILABLE, message=message, id=frame.id, retry_after=1.0)
            .model_dump_json(exclude_none=True)
            .encode()
            for _, frame in batch
        ]


async def _unless(event: asyncio.Event, request: Coroutine[Any, Any, Msg]) -> Msg | None:
    """The answer to ``request``, or ``None`` (the request cancelled) if ``event`` is set first."""
    asking = asyncio.ensure_future(request)
    waiting = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait((asking, waiting), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (asking, waiting):
            if not task.done():
                task.cancel()
    if asking.done() and not asking.cancelled():
        return asking.result()
    return None


def _error_frame(action: Forward, code: ErrorCode, message: str, retry_after: float) -> bytes:
    frame = ErrorFrame(code=code, message=message, client_msg_id=action.frame.client_msg_id, retry_after=retry_after)
    return frame.model_dump_json(exclude_none=True).encode()


def _bound_handshake_heads(max_bytes: int) -> None:
    """Bound the request heads websockets reads (its limits are module-wide: 8 KiB per line, 128 lines)."""
    websockets.http11.MAX_LINE_LENGTH = min(websockets.http11.MAX_LINE_LENGTH, max_bytes)
    websockets.http11.MAX_NUM_HEADERS = max(8, min(websockets.http11.MAX_NUM_HEADERS, max_bytes // 256))


def text_frame(payload: bytes) -> bytes:
    """A server's WebSocket text frame (final, unmasked, no extension) around ``payload``, as bytes."""
    size = len(payload)
    if size < 126:
        return b"\x81" + size.to_bytes(1, "big") + payload
    if size < 65536:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


def _writable(connection: ServerConnection) -> bool:
    """Whether encoded frames may go straight to the transport (see :func:`fan_out`)."""
    protocol = connection.protocol
    return (
        not protocol.extensions
        and not protocol.writes
        and not protocol.expect_continuation_frame
        and connection.send_in_progress is None
    )


def write_frames(frames: dict[ServerConnection, list[bytes]], budget: int | None = None) -> list[ServerConnection]:
    """Write each connection its encoded text frames (:func:`text_frame`) in one write, in order.

    One write per connection instead of one per frame: a batch of acks, or the pushes of one group
    commit, costs each connection one system call. Conditions and ``budget`` as in :func:`fan_out`;
    connections past the budget are returned.
    """
    over: list[ServerConnection] = []
    for connection, encoded in frames.items():
        if connection.protocol.state is not State.OPEN:
            continue
        data = encoded[0] if len(encoded) == 1 else b"".join(encoded)
        if budget is not None and connection.transport.get_write_buffer_size() + len(data) > budget:
            over.append(connection)
        elif _writable(connection):
            connection.transport.write(data)
        else:
            for frame in encoded:
                broadcast([connection], _payload(frame), text=True)
    return over


def _payload(frame: bytes) -> bytes:
    """The payload of a frame encoded by :func:`text_frame`."""
    size = frame[1]
    return frame[2 + (2 if size == 126 else 8 if size == 127 else 0) :]


def fan_out(connections: list[ServerConnection], frame: bytes, budget: int | None = None) -> list[ServerConnection]:
    """Send one text frame to many connections, encoding the WebSocket frame once.

    ``websockets.broadcast`` serializes the frame again for every connection, which dominates the cost
    of a large group (thousands of recipients per gateway). A server frame is not masked and, with no
    extension negotiated (this server disables compression), its bytes are the same for every
    connection: encode once and write them to each transport. Connections in any other state (closing,
    a fragmented send under way, bytes still queued, an extension) go through ``broadcast``.

    Writing to a transport never waits, so a client that stops reading would keep every frame in the
    node's memory. With a ``budget``, a connection whose unwritten bytes would pass it gets nothing
    more and is returned: the caller closes it (4013) and the client catches up by sync.
    """
    encoded = text_frame(frame)
    others = []
    over: list[ServerConnection] = []
    for connection in connections:
        if connection.protocol.state is not State.OPEN:
            continue  # closing: nothing more is sent (what broadcast would do too)
        if budget is not None and connection.transport.get_write_buffer_size() + len(encoded) > budget:
            over.append(connection)
        elif _writable(connection):
            connection.transport.write(encoded)
        else:
            others.append(connection)
    if others:
        broadcast(others, frame, text=True)
    return over
