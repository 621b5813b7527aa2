"""The NATS side of a node: connection, KV buckets and the live registry mirror."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import nats
import orjson
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError
from nats.js.kv import KeyValue

from ..settings import Settings
from .codec import Delivery, encode_delivery
from .permissions import Role, inbox_prefix
from .revocations import REVOCATION_MARGIN
from .routes import NodeInfo, NodeTable, RouteTable
from .subjects import Subjects, parse_route_key

__all__ = ["Bus", "RegistryMirror", "connect_options"]

log = logging.getLogger(__name__)

DOUBT_AFTER = 1.0
"""Seconds after which a heartbeat of our own that the nodes watcher has not shown freezes node ages."""

STALL_AFTER = 3.0
"""Seconds after which a heartbeat of our own that the nodes watcher has not shown means it stalled."""


def connect_options(settings: Settings, *, role: Role, name: str) -> dict[str, Any]:
    """The credentials, TLS and inbox prefix of a connection as ``role``, for ``nats.connect(**options)``.

    Every node connects through here (:meth:`Bus._connect`); operator tools use it with ``role="admin"``.
    The inbox prefix is the role's own (see :mod:`im_server.bus.permissions`), so replies to this
    connection's requests land where only this role may subscribe.
    """
    options: dict[str, Any] = {
        "servers": settings.nats_servers(),
        # The operator's order, not a shuffle: each node lists the server on its own machine first.
        "dont_randomize": True,
        "name": name,
        "inbox_prefix": inbox_prefix(settings.subject_prefix, role, name),
    }
    if settings.nats_user is not None:
        options["user"] = settings.nats_user
        if settings.nats_password is not None:
            options["password"] = settings.nats_password.get_secret_value()
    if settings.nats_nkey_seed_file is not None:
        options["nkeys_seed"] = str(settings.nats_nkey_seed_file)
    if settings.nats_creds_file is not None:
        options["user_credentials"] = str(settings.nats_creds_file)
    tls_wanted = any(url.startswith("tls://") for url in settings.nats_servers()) or any(
        path is not None for path in (settings.nats_tls_ca_file, settings.nats_tls_cert_file)
    )
    if tls_wanted:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=str(settings.nats_tls_ca_file) if settings.nats_tls_ca_file is not None else None,
        )
        if settings.nats_tls_cert_file is not None and settings.nats_tls_key_file is not None:
            context.load_cert_chain(str(settings.nats_tls_cert_file), str(settings.nats_tls_key_file))
        options["tls"] = context
    return options


async def _ensure_kv(js: JetStreamContext, bucket: str, *, create: bool, deadline: float, **config: Any) -> KeyValue:
    """The bucket; created if missing and ``create``, else waited for (an API node creates it).

    Until ``deadline`` (the loop's clock), a JetStream that is not ready yet or a request that timed out
    on a busy server is retried rather than ending the node's start.
    """
    loop = asyncio.get_running_loop()
    waited = False
    while True:
        try:
            return await js.key_value(bucket)
        except BucketNotFoundError:
            if create:
                try:
                    return await js.create_key_value(bucket=bucket, **config)
                except Exception as exc:
                    # Another node created it first, possibly with a slightly different configuration;
                    # or a NATS cluster is still forming ("no suitable peers for placement"): try again.
                    if loop.time() > deadline:
                        raise
                    log.warning("cannot create the bucket %s yet: %r", bucket, exc)
                    await asyncio.sleep(0.2)
                    continue
            if not waited:
                log.info("waiting for an API node to create the bucket %s", bucket)
                waited = True
        except Exception as exc:
            if loop.time() > deadline:
                raise
            log.warning("bucket %s not available yet: %r", bucket, exc)
        if loop.time() > deadline:
            raise TimeoutError(f"the bucket {bucket} does not exist; no API node created it in time")
        await asyncio.sleep(0.2)


class Bus:
    """A node's NATS connection, the cluster's subjects and its two registry buckets."""

    def __init__(self, settings: Settings, *, name: str, role: Role = "api") -> None:
        self.settings = settings
        self.role: Role = role
        """Which NATS permissions this node has: only API nodes create buckets."""
        self.subjects = Subjects(settings.subject_prefix)
        self.name = name
        """The node this connection belongs to (for logs)."""
        self.nc: NATS = NATS()
        self._js: JetStreamContext | None = None
        self._routes: KeyValue | None = None
        self._nodes: KeyValue | None = None
        self._revoked: KeyValue | None = None
        self._listeners: dict[str, list[Callable[..., None]]] = {"disconnect": [], "reconnect": [], "error": []}

    def listen(
        self,
        *,
        on_disconnect: Callable[[], None] | None = None,
        on_reconnect: Callable[[], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        """Be told (synchronously, on the event loop) when the connection drops, comes back or reports an error.

        ``on_reconnect`` runs after the client has subscribed again to everything; state kept in JetStream
        (watchers, ordered consumers) may be gone and is the listener's to recreate.
        """
        for kind, callback in (("disconnect", on_disconnect), ("reconnect", on_reconnect), ("error", on_error)):
            if callback is not None:
                self._listeners[kind].append(callback)

    def _notify(self, kind: str, *args: Any) -> None:
        for callback in self._listeners[kind]:
            try:
                callback(*args)
            except Exception:
                log.exception("nats %s: %s listener failed", self.name, kind)

    async def connect(self) -> None:
        """Connect (retrying until NATS answers) and make sure the buckets exist."""

        async def on_error(exc: Exception) -> None:
            log.warning("nats %s: %s", self.name, exc)
            self._notify("error", exc)

        async def on_disconnect() -> None:
            log.warning("nats %s: disconnected", self.name)
            self._notify("disconnect")

        async def on_reconnect() -> None:
            log.info("nats %s: reconnected", self.name)
            self._notify("reconnect")

        deadline = asyncio.get_running_loop().time() + self.settings.nats_connect_timeout
        while True:
            try:
                self.nc = await self._connect(on_error, on_disconnect, on_reconnect)
                break
            except Exception as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                log.warning("nats %s: cannot connect to %s yet (%s)", self.name, self.settings.nats_url, exc)
                await asyncio.sleep(0.5)
        self._js = self.nc.jetstream(timeout=5)
        ttl = self.settings.node_ttl
        create = self.role == "api"
        replicas = self.settings.nats_replicas
        self._routes = await _ensure_kv(
            self._js, self.subjects.routes_bucket, create=create, deadline=deadline, history=1, replicas=replicas
        )
        self._nodes = await _ensure_kv(
            self._js,
            self.subjects.nodes_bucket,
            create=create,
            deadline=deadline,
            history=1,
            ttl=ttl,
            limit_marker_ttl=max(1.0, ttl),
            replicas=replicas,
        )
        # A revocation must outlive every access token of its session; expired entries just vanish.
        self._revoked = await _ensure_kv(
            self._js,
            self.subjects.revoked_bucket,
            create=create,
            deadline=deadline,
            history=1,
            ttl=self.settings.access_token_ttl + REVOCATION_MARGIN,
            replicas=replicas,
        )

    async def _connect(self, on_error: Any, on_disconnect: Any, on_reconnect: Any) -> NATS:
        # Pings every ``nats_ping_interval`` notice a dead link in seconds, not nats-py's default of
        # minutes; reconnects never give up (a node without NATS is useless, and NATS may be restarted
        # at any time), tried every half second; publishes made meanwhile wait in a 64 MiB buffer (past
        # it they fail, and their recipients are owed a resync, see services/delivery.py).
        return await nats.connect(
            **connect_options(self.settings, role=self.role, name=self.name),
            connect_timeout=5,
            reconnect_time_wait=0.5,
            max_reconnect_attempts=-1,
            allow_reconnect=True,
            ping_interval=self.settings.nats_ping_interval,
            max_outstanding_pings=self.settings.nats_max_outstanding_pings,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            pending_size=64 * 1024 * 1024,
        )

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context."""
        assert self._js is not None, "connect() first"
        return self._js

    @property
    def routes(self) -> KeyValue:
        """The route registry bucket."""
        assert self._routes is not None, "connect() first"
        return self._routes

    @property
    def nodes(self) -> KeyValue:
        """The node registry bucket."""
        assert self._nodes is not None, "connect() first"
        return self._nodes

    @property
    def revoked(self) -> KeyValue:
        """The revoked-session bucket."""
        assert self._revoked is not None, "connect() first"
        return self._revoked

    async def publish_deliveries(self, plan: Mapping[str, Sequence[Delivery]]) -> int:
        """One publish per gateway node; returns the number of publishes."""
        for node_id, items in plan.items():
            await self.nc.publish(self.subjects.gateway(node_id), encode_delivery(items))
        return len(plan)

    async def close(self) -> None:
        """Flush and close the connection."""
        if self.nc.is_connected:
            with contextlib.suppress(Exception):
                await self.nc.drain()
        with contextlib.suppress(Exception):
            await self.nc.close()


def parse_heartbeat(node_id: str, value: bytes) -> NodeInfo:
    """A node registry value as :class:`NodeInfo`."""
    data = orjson.loads(value)
    return NodeInfo(
        node_id=node_id,
        role=str(data.get("role", "gateway")),
        url=data.get("url"),
        connections=int(data.get("connections", 0)),
        started_at=float(data.get("started_at", 0.0)),
        version=str(data.get("version", "")),
        state=str(data.get("state", "serving")),
        frames_in=_figure(data.get("frames_in")),
        frames_out=_figure(data.get("frames_out")),
        frames_in_rate=_figure(data.get("frames_in_rate")),
        frames_out_rate=_figure(data.get("frames_out_rate")),
    )


def _figure(value: object) -> float | None:
    """A non-negative number from a heartbeat, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e18:
        return None
    return float(value)


class RegistryMirror:
    """Keeps a :class:`RouteTable` and a :class:`NodeTable` equal to the registry buckets.

    The watchers are recreated on every NATS reconnect (a restarted server forgets the consumers behind
    them), and the fresh snapshot replaces the tables at once, so a view heals as soon as NATS is back.
    While the connection is down, node ages are frozen (see :meth:`NodeTable.freeze`) and
    :attr:`current` is false.

    A watcher can also stall with the connection up: after a NATS server of a cluster died, JetStream
    sometimes stops feeding a consumer made while its stream was electing a leader, and the client only
    makes a new one after missing heartbeats for 10 s. Meanwhile a stale view routes nothing to devices
    that connected since. The node's own heartbeat is the canary: each one written is reported with
    :meth:`beat_written`, and one the nodes watcher has not shown within :data:`STALL_AFTER` seconds
    makes the watchers be recreated (:attr:`stalls` counts it). From :data:`DOUBT_AFTER` seconds on,
    and while this node cannot write its heartbeat, node ages stop growing: nobody is judged dead on a
    view that may be behind.
    """

    def __init__(self, bus: Bus, *, follow_routes: bool = True) -> None:
        self._bus = bus
        self._follow_routes = follow_routes
        self.routes = RouteTable()
        self.nodes = NodeTable(ttl=bus.settings.node_ttl)
        self.route_revision = 0
        """The newest route registry revision applied to :attr:`routes`."""
        self.route_revisions: dict[tuple[int, str], int] = {}
        """The registry revision of each live route (for deletes that must not undo a newer put)."""
        self.current = False
        """Whether the tables follow the registry right now (false while NATS is away, until reloaded)."""
        self.reloads = 0
        self.departed: dict[str, float] = {}
        """Nodes whose registry entry went away (deleted, expired, or missing after a reload), and when."""
        self._snapshot_revision = 0
        self.on_reload: list[Callable[[], None]] = []
        """Called after each reload that followed a reconnect."""
        self._revision_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._watchers: list[Any] = []
        self._reload_task: asyncio.Task[None] | None = None
        self._stopped = False
        self.node_revision = 0
        """The newest node registry revision the nodes watcher showed."""
        self._awaited: tuple[int, float] | None = None
        """The oldest heartbeat of our own not shown yet by the watcher: its revision, and when it was written."""
        self.stalls = 0
        """Watchers recreated because they had stopped showing changes (see :meth:`beat_written`)."""
        self._doubting = False
        """Whether node ages are frozen because this view may be behind (see :meth:`beat_written`)."""

    async def start(self) -> None:
        """Load the buckets, then follow their changes in the background (and reload on every reconnect)."""
        await self._load()
        self._bus.listen(on_disconnect=self._on_disconnect, on_reconnect=self._on_reconnect)

    async def _load(self) -> None:
        nodes = NodeTable(ttl=self.nodes.ttl)
        routes = RouteTable()
        revisions: dict[tuple[int, str], int] = {}
        buckets: list[tuple[KeyValue, Callable[[Any], None], Callable[[Any], None], Callable[[], None]]] = [
            (
                self._bus.nodes,
                lambda entry: self._apply_node(entry, nodes, snapshot=True),
                lambda entry: self._apply_node(entry, self.nodes),
                lambda: self._replace_nodes(nodes),
            )
        ]
        if self._follow_routes:
            buckets.append(
                (
                    self._bus.routes,
                    lambda entry: self._apply_route(entry, routes, revisions, live=False),
                    lambda entry: self._apply_route(entry, self.routes, self.route_revisions),
                    lambda: self._replace_routes(routes, revisions),
                )
            )
        for bucket, apply, apply_live, done in buckets:
            watcher = await bucket.watchall()
            self._watchers.append(watcher)
            ready = asyncio.get_running_loop().create_future()
            self._tasks.append(asyncio.create_task(self._follow(watcher, apply, apply_live, done, ready)))
            await ready
        self.current = True

    def _replace_nodes(self, nodes: NodeTable) -> None:
        self._doubting = False  # read afresh: replace() makes ages exact again
        now = time.monotonic()
        fresh = set(nodes.known())
        for node in self.nodes.known():
            if node not in fresh:
                self.departed.setdefault(node, now)
        for node in fresh:
            self.departed.pop(node, None)
        self.nodes.replace(nodes)

    def _replace_routes(self, routes: RouteTable, revisions: dict[tuple[int, str], int]) -> None:
        self.routes.replace(routes)
        self.route_revisions = revisions
        self._advance(self._snapshot_revision)

    def beat_written(self, revision: int) -> None:
        """This node's heartbeat was written at ``revision``: the nodes watcher should show it soon.

        While the one awaited before is overdue (:data:`DOUBT_AFTER`), this view may be behind: node ages
        stop growing, so that nobody is judged dead for a silence that may be this view's, until it shows
        the heartbeat. Not shown after :data:`STALL_AFTER` seconds, the watchers are stalled and are made
        again (as after a reconnect).
        """
        now = time.monotonic()
        awaited = self._awaited
        if awaited is None or self.node_revision >= awaited[0] or not self.current:
            self._awaited = (revision, now)
            return
        overdue = now - awaited[1]
        if overdue >= DOUBT_AFTER:
            self._doubt()
        if overdue >= STALL_AFTER:
            self._awaited = None
            self.stalled(f"nodes revision {awaited[0]}, written {overdue:.1f}s ago, not shown")

    def beat_failed(self) -> None:
        """This node could not write its heartbeat: others may not be able to either, so judge nobody
        dead until this view shows a heartbeat of ours again."""
        self._doubt()

    def _doubt(self) -> None:
        if not self._doubting:
            self._doubting = True
            self.nodes.freeze()

    def stalled(self, why: str) -> None:
        """A watcher stopped showing changes (``why``): make the watchers again, as after a reconnect."""
        if self._stopped or not self.current or (self._reload_task is not None and not self._reload_task.done()):
            return  # not following, or already following again
        self.stalls += 1
        log.warning("node %s: registry view stalled (%s); following it again", self._bus.name, why)
        self._on_reconnect()

    def _on_disconnect(self) -> None:
        self.current = False
        self.nodes.freeze()

    def _on_reconnect(self) -> None:
        if self._stopped or (self._reload_task is not None and not self._reload_task.done()):
            return
        self.current = False
        self.nodes.freeze()
        self._reload_task = asyncio.create_task(self._reload(), name="registry-reload")

    async def _reload(self) -> None:
        delay = 0.05
        while not self._stopped:
            await self._stop_watchers()
            try:
                async with asyncio.timeout(10):
                    await self._load()
            except Exception as exc:
                # JetStream may need a moment after a server restart before its streams answer.
                log.warning("registry reload failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
                continue
            self.reloads += 1
            log.info("registry views reloaded: %d nodes, %d routes", len(self.nodes.known()), len(self.routes))
            for callback in self.on_reload:
                try:
                    callback()
                except Exception:
                    log.exception("registry reload listener failed")
            return

    async def _follow(
        self,
        watcher: Any,
        apply: Callable[[Any], None],
        apply_live: Callable[[Any], None],
        done: Callable[[], None],
        ready: asyncio.Future[None],
    ) -> None:
        # Until the snapshot's end marker, entries go to fresh tables (``apply``), which then replace the
        # live ones (``done``); after it, changes go straight to the live tables.
        try:
            async for entry in watcher:
                if entry is None:
                    if not ready.done():
                        done()
                        ready.set_result(None)
                    continue
                try:
                    if ready.done():
                        apply_live(entry)
                    else:
                        apply(entry)
                except Exception:
                    log.exception("bad registry entry %r", entry.key)
        finally:
            if not ready.done():
                ready.set_exception(ConnectionError("the registry watcher ended before its snapshot"))

    def _apply_route(
        self, entry: Any, routes: RouteTable, revisions: dict[tuple[int, str], int], *, live: bool = True
    ) -> None:
        user_id, device_id = parse_route_key(entry.key)
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            # The registry keeps delete markers, with their time: the device's "last seen", which
            # survives restarts of the API nodes.
            at = entry.created.timestamp() if entry.created is not None else None
            routes.remove(user_id, device_id, at)
            revisions.pop((user_id, device_id), None)
        else:
            routes.set(user_id, device_id, entry.value.decode())
            if entry.revision:
                revisions[(user_id, device_id)] = entry.revision
        if not entry.revision:
            return
        if live:
            self._advance(entry.revision)
        else:
            # Waiters are woken once the snapshot is the live table, not while it is being read.
            self._snapshot_revision = max(self._snapshot_revision, entry.revision)

    def _advance(self, revision: int) -> None:
        if revision > self.route_revision:
            self.route_revision = revision
            if self._revision_waiters:
                self._wake_revision_waiters()

    def _wake_revision_waiters(self) -> None:
        waiting = []
        for revision, future in self._revision_waiters:
            if revision <= self.route_revision:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((revision, future))
        self._revision_waiters = waiting

    async def wait_for_routes(self, revision: int) -> None:
        """Wait until the route table includes ``revision`` (bound it with ``asyncio.timeout``)."""
        if self.route_revision >= revision:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._revision_waiters.append((revision, future))
        await future

    def _apply_node(self, entry: Any, nodes: NodeTable, *, snapshot: bool = False) -> None:
        if entry.revision:
            self.node_revision = max(self.node_revision, entry.revision)
            awaited = self._awaited
            if self._doubting and not snapshot and awaited is not None and entry.revision >= awaited[0]:
                # Our own heartbeat shows: so does everything written before it. Ages are exact again.
                self._doubting = False
                self.nodes.thaw()
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            nodes.remove(entry.key)
            if nodes is self.nodes:
                self.departed.setdefault(entry.key, time.monotonic())
            return
        if nodes is self.nodes:
            self.departed.pop(entry.key, None)
        age = 0.0
        if snapshot and entry.created is not None:
            # A snapshot's heartbeat may be old: judge the node by when it wrote it, not by when we read it.
            age = min(nodes.ttl, max(0.0, time.time() - entry.created.timestamp()))
        nodes.heartbeat(parse_heartbeat(entry.key, entry.value), age)

    async def _stop_watchers(self) -> None:
        for watcher in self._watchers:
            with contextlib.suppress(Exception):
                await watcher.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._watchers = []
        self._tasks = []

    async def stop(self) -> None:
        """Stop following."""
        self._stopped = True
        if self._reload_task is not None:
            self._reload_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reload_task
        await self._stop_watchers()
