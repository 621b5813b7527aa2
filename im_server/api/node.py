"""An API node: the services wired together, plus the NATS side (send service, registry mirror)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Annotated

import orjson
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import Field, StringConstraints, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from im_schema.errors import ErrorCode
from im_schema.frames import ErrorFrame, SendFrame
from im_schema.limits import MAX_GATEWAY_ALTERNATES
from im_schema.rest import GatewayAddress, GatewayAssignment

from .. import logs
from ..blobs import open_blob_store
from ..bus.codec import (
    SYNC_AGAIN,
    MembersChanged,
    PresenceChanged,
    SocialChanged,
    SyncQuery,
    SyncRequest,
    TypingChanged,
    decode_ephemeral,
    decode_event,
    encode_event,
)
from ..bus.nats import Bus, RegistryMirror
from ..bus.permissions import inbox_prefix
from ..bus.revocations import Revocation
from ..bus.routes import ranked
from ..cluster.access import AccessMirror
from ..cluster.heartbeat import Heartbeat
from ..cluster.metrics import SIZE_BUCKETS, LoopLagMonitor, Registry
from ..cluster.reaper import RouteReaper
from ..cluster.sessions import RevocationMirror, Revoker
from ..cluster.trace import NodeTrace, TraceResponder, TraceRing, gather
from ..errors import ServerError, Unavailable, storage_error
from ..services.admin import AdminService
from ..services.auth import AuthService
from ..services.commit import GroupCommitter
from ..services.delivery import Deliverer, ack_frame
from ..services.devices import DeviceService
from ..services.files import FileService
from ..services.forwarded import ForwardedIdentity
from ..services.groups import GroupService
from ..services.lifecycle import LifecycleService
from ..services.media import MediaService
from ..services.membership import MembershipCache
from ..services.messaging import MessagingService, UserDirectory
from ..services.presses import PressService
from ..services.social import SocialService
from ..services.streams import StreamService
from ..services.sync import SyncService
from ..services.tokens import Claims, TokenCodec
from ..settings import Settings
from ..storage import Database, MessageStore, UserStore
from ..storage._util import now_ms
from ..storage.admin import AdminStore
from ..storage.devices import DeviceStore, Revoked
from ..storage.entrance import LoginFailureStore
from ..storage.faults import classify
from ..storage.files import FileStore
from ..storage.groups import GroupStore
from ..storage.presses import PressStore
from ..storage.social import SocialStore
from ..storage.streams import StreamStore

__all__ = ["ApiNode"]

log = logging.getLogger(__name__)


class ApiNode:
    """Everything one API process runs; built by :meth:`__init__`, run by :meth:`start` / :meth:`stop`."""

    def __init__(self, settings: Settings, *, url: str | None = None) -> None:
        self.settings = settings
        self.node_id = settings.node_id or f"api-{secrets.token_hex(4)}"
        self.url = url or f"http://{settings.api_host}:{settings.api_port}"
        self.db = Database(settings.db_url)
        self.users = UserStore(self.db)
        self.messages = MessageStore(self.db)
        self.bus = Bus(settings, name=self.node_id)
        self.mirror = RegistryMirror(self.bus)
        self.revocations = RevocationMirror(self.bus, self.node_id)
        self.access = AccessMirror(self.bus, self.node_id)
        self.revoker = Revoker(self.bus, self.mirror.nodes)
        self.device_store = DeviceStore(self.db)
        self.devices = DeviceService(
            settings, self.device_store, self.mirror.routes, self.mirror.nodes, revoke=self._revoke
        )
        self.auth = AuthService(
            settings,
            self.users,
            TokenCodec.from_ring(*settings.key_ring()),
            devices=self.devices,
            failures=LoginFailureStore(self.db),
            revoked=self.revocations.is_revoked,
            admin=AdminStore(self.db),
        )
        self.admin = AdminService(
            AdminStore(self.db),
            self.devices,
            self.mirror.routes,
            self.mirror.nodes,
            publish=self._publish_control,
            gather=self._gather_traces,
        )
        """Cluster administration (``/v1/admin``), for admins only."""
        self.forwarded = ForwardedIdentity(
            TokenCodec(settings.signing_key()),
            grace=settings.refresh_token_ttl,
            revoked=self.revocations.is_revoked,
        )
        """Who sent what a gateway forwards: the verified token that came with it, never the payload."""
        self.group_store = GroupStore(self.db)
        self.memberships = MembershipCache(self.group_store)
        self.metrics = Registry()
        self.trace = TraceRing(settings.trace_capacity, settings.trace_devices)
        """The messages this node stored and published lately (``im cluster trace``)."""
        self.tracer = TraceResponder(self.bus, self.node_id, "api", self.trace)
        self.deliverer = Deliverer(self.bus, self.mirror, self.memberships, self.metrics, trace=self.trace)
        self.committer = GroupCommitter(
            self.messages,
            max_batch=settings.commit_max_batch,
            max_queue_wait=settings.commit_max_queue_wait,
            on_commit=self.deliverer,
            metrics=self.metrics,
        )
        self.directory = UserDirectory(self.users)
        self.file_store = FileStore(self.db)
        self.files = FileService(settings, self.file_store)
        self.social = SocialService(
            settings,
            SocialStore(self.db),
            self.users,
            self.directory,
            self.deliverer,
            self.mirror.routes,
            self.mirror.nodes,
            announce=self._announce_social,
        )
        self.messaging = MessagingService(
            settings,
            self.messages,
            self.directory,
            self.committer,
            media=MediaService(settings, self.file_store),
            check_direct=self.social.check_direct,
            direct_allowed=self.social.direct_allowed,
        )
        self.sync = SyncService(self.messages)
        self.groups = GroupService(
            settings,
            self.group_store,
            self.memberships,
            self.directory,
            self.deliverer,
            self.social,
            announce=self._announce_members,
        )
        self.lifecycle = LifecycleService(
            settings,
            self.messages,
            self.group_store,
            self.memberships,
            self.sync,
            self.social,
            self.directory,
            self.deliverer,
            self.mirror.routes,
            self.mirror.nodes,
        )
        self.streams = StreamService(settings, StreamStore(self.db), self.messaging, self.committer, self.deliverer)
        """Streaming messages (``/v1/streams``)."""
        self.presses = PressService(settings, PressStore(self.db), self.social, self.directory, self.deliverer)
        self.heartbeat = Heartbeat(self.bus, self.node_id, role="api", url=self.url)
        self.heartbeat.on_written = self.mirror.beat_written
        self.heartbeat.on_failed = self.mirror.beat_failed
        self._inflight: set[asyncio.Task[None]] = set()
        self._loop_lag = LoopLagMonitor(
            self.metrics.histogram("im_event_loop_lag_seconds", "How late the event loop runs a scheduled callback.")
        )
        self._send_batches = self.metrics.histogram(
            "im_forwarded_send_batch_size", "Sends per request forwarded by gateways.", SIZE_BUCKETS
        )
        self._send_seconds = self.metrics.histogram(
            "im_send_seconds", "From a batch of forwarded sends arriving to its answer (stored and acked)."
        )
        self._sync_batches = self.metrics.histogram(
            "im_forwarded_sync_batch_size", "Sync frames per request forwarded by gateways.", SIZE_BUCKETS
        )
        self._sync_seconds = self.metrics.histogram(
            "im_sync_seconds", "From a batch of forwarded sync frames arriving to its answer."
        )
        self.errors = self.metrics.counter(
            "im_errors_total", "Error answers (HTTP and forwarded sends), by error code.", ["code"]
        )
        self.reaper = RouteReaper(self.bus, self.mirror, self.node_id)
        self._describe_metrics()
        self._subscriptions: list[Subscription] = []
        self._gateway_inboxes = inbox_prefix(settings.subject_prefix, "gateway", "")

    def _describe_metrics(self) -> None:
        """The figures other components keep, read at each scrape (see :mod:`im_server.cluster.metrics`)."""
        metrics = self.metrics
        metrics.gauge(
            "im_routes", "Device routes in this node's copy of the registry.", lambda: len(self.mirror.routes)
        )
        metrics.gauge(
            "im_live_gateways", "Gateways with a fresh heartbeat.", lambda: len(self.mirror.nodes.live("gateway"))
        )
        metrics.gauge(
            "im_revoked_sessions",
            "Logged-out sessions in this node's copy of the bucket.",
            lambda: len(self.revocations.table),
        )
        metrics.read_counter(
            "im_revocation_barriers_incomplete_total",
            "Logouts some live node did not confirm within the barrier timeout.",
            lambda: self.revoker.incomplete,
        )
        metrics.read_counter(
            "im_dead_node_routes_reaped_total", "Routes of dead nodes removed.", lambda: self.reaper.reaped
        )
        metrics.read_counter(
            "im_gateways_probed_dead_total",
            "Gateways found dead by a probe before their heartbeat expired.",
            lambda: self.reaper.probed_dead,
        )
        metrics.gauge(
            "im_resyncs_owed",
            "Users remembered for a resync (their pushes may have been lost).",
            lambda: self.deliverer.owed,
        )
        metrics.read_counter(
            "im_resync_publishes_total", "Resync frames published to gateways.", lambda: self.deliverer.resyncs
        )
        metrics.read_counter(
            "im_resyncs_settled_total",
            "Resyncs owed (per user and gateway) dropped: the gateway resynced all its clients after them.",
            lambda: self.deliverer.settled,
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
        metrics.gauge(
            "im_nats_connected", "1 while this node is connected to NATS.", lambda: float(self.bus.nc.is_connected)
        )
        metrics.read_counter(
            "im_nats_reconnects_total",
            "Times this node's NATS connection came back.",
            lambda: self.bus.nc.stats["reconnects"],
        )
        metrics.read_counter(
            "im_storage_errors_total",
            "Writes that failed with a storage error, by kind (busy, full, unavailable).",
            lambda: {kind: float(count) for kind, count in self.db.health.counts.items()},
            label="kind",
        )
        metrics.read_counter(
            "im_password_checks_total",
            "Password checks at login, by how: argon2 (every wrong one and a first good one) or remembered.",
            lambda: {how: float(count) for how, count in self.auth.password_checks.items()},
            label="how",
        )
        metrics.gauge(
            "im_password_hashes_waiting",
            "Password checks waiting for a hashing slot.",
            lambda: self.auth.hashing.waiting,
        )

    async def start(self) -> None:
        """Migrate the database, join the bus, load the registries, start committing."""
        logs.set_process_node(self.node_id)
        logs.node_id.set(self.node_id)
        await self.db.migrate()
        await self.bus.connect()
        await self.revocations.start()
        await self.access.start()
        await self.files.start(open_blob_store(self.settings, self.bus.js))
        await self.mirror.start()
        await self._restore_revocations()
        self.committer.start()
        subjects = self.bus.subjects
        nc = self.bus.nc
        self._subscriptions = [
            await nc.subscribe(subjects.send, queue="api", cb=self._on_send),
            await nc.subscribe(subjects.sync, queue="api", cb=self._on_sync),
            await nc.subscribe(subjects.barrier, cb=self._on_barrier),
            await nc.subscribe(subjects.social_changed, cb=self._on_social_changed),
            await nc.subscribe(subjects.members_changed, cb=self._on_members_changed),
            await nc.subscribe(subjects.ephemeral, queue="api", cb=self._on_ephemeral),
        ]
        await self.tracer.start()
        await self.heartbeat.start()
        self.deliverer.start(self.settings.heartbeat_interval)
        self.reaper.start()
        self.streams.start()
        self._loop_lag.start()
        log.info("api node %s started", self.node_id)

    async def stop(self) -> None:
        """Stop taking sends, commit what is queued, leave the bus."""
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        await self.tracer.stop()
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=5)
        await self.streams.stop()
        await self.committer.stop()
        await self.reaper.stop()
        await self.deliverer.stop()
        await self._loop_lag.stop()
        await self.heartbeat.stop()
        await self.revocations.stop()
        await self.access.stop()
        await self.mirror.stop()
        await self.files.stop()
        await self.bus.close()
        await self.db.close()
        self.auth.close()
        log.info("api node %s stopped", self.node_id)

    async def health(self) -> dict[str, object]:
        """What ``/healthz`` reports: every dependency, and which are degraded."""
        writable, why = self.db.health.writable()
        if not writable:
            # A disk that has room again (or a database that is back) is noticed without waiting for a send.
            await self.db.probe_write()
            writable, why = self.db.health.writable()
        checks = {"database": writable, "nats": self.bus.nc.is_connected, "registries": self.mirror.current}
        return {
            "status": "ok" if all(checks.values()) else "degraded",
            "node_id": self.node_id,
            "checks": checks,
            "degraded": [name for name, ok in checks.items() if not ok],
            "database": "ok" if writable else why,
            "nats": self.bus.nc.is_connected,
            "routes": len(self.mirror.routes),
            "gateways": [info.node_id for info in self.mirror.nodes.live("gateway")],
            "apis": [info.node_id for info in self.mirror.nodes.live("api")],
        }

    def assign_gateway(self, user_id: int, device_id: str, *, avoid: str | None = None) -> GatewayAssignment:
        """The live gateway this device should use (rendezvous hashing over live gateways), and the
        others in the order it would be given them if the ones before went away.

        ``avoid`` (a gateway the device just lost) is left out while another is live: a gateway killed a
        moment ago is still live in the registry until its heartbeat is missed.
        """
        gateways = {
            info.node_id: info.url
            for info in self.mirror.nodes.live("gateway")
            if info.url and info.state != "draining"
        }
        if avoid is not None and avoid in gateways and len(gateways) > 1:
            del gateways[avoid]
        order = ranked(f"{user_id}.{device_id}", gateways)
        if not order:
            raise Unavailable("no gateway node is up", retry_after=1.0)
        chosen, *others = order
        return GatewayAssignment(
            node_id=chosen,
            url=gateways[chosen],
            alternates=[GatewayAddress(node_id=node, url=gateways[node]) for node in others[:MAX_GATEWAY_ALTERNATES]],
        )

    async def _gather_traces(self, conversation: str, seq: int, nodes: list[str]) -> list[NodeTrace]:
        return await gather(self.bus, conversation, seq, nodes)

    async def _publish_control(self, node_id: str, data: bytes) -> None:
        # Plainly, like a delivery (see im_server.cluster.drain): no reply subject, no headers.
        await self.bus.nc.publish(self.bus.subjects.gateway(node_id), data)
        await self.bus.nc.flush()

    # Logged-out sessions -----------------------------------------------------------------------------

    async def _revoke(self, revoked: Sequence[Revoked]) -> None:
        await self.revoker.revoke(
            [Revocation(item.session_id, item.user_id, item.device_id, item.expires_at) for item in revoked]
        )

    async def _restore_revocations(self) -> None:
        # The database keeps every revocation in force; a NATS that lost the bucket gets them back.
        stored = await self.device_store.revocations(now=now_ms())
        restored = await self.revoker.restore(
            [Revocation(item.session_id, item.user_id, item.device_id, item.expires_at) for item in stored],
            self.revocations.is_revoked,
        )
        if restored:
            log.warning("api node %s: restored %d revocations the bucket had lost", self.node_id, restored)

    # Cache invalidation across API nodes ----------------------------------------------------------

    async def _announce_social(self, user_ids: Iterable[int]) -> None:
        event = SocialChanged(node=self.node_id, users=list(user_ids))
        await self.bus.nc.publish(self.bus.subjects.social_changed, encode_event(event))

    async def _on_social_changed(self, msg: Msg) -> None:
        try:
            event = decode_event(SocialChanged, msg.data)
        except ValueError as exc:
            log.warning("bad social event: %s", exc)
            return
        if event.node != self.node_id:
            self.social.forget(event.users)

    async def _announce_members(self, conversation: str) -> None:
        event = MembersChanged(node=self.node_id, conversation=conversation)
        await self.bus.nc.publish(self.bus.subjects.members_changed, encode_event(event))

    async def _on_members_changed(self, msg: Msg) -> None:
        try:
            event = decode_event(MembersChanged, msg.data)
        except ValueError as exc:
            log.warning("bad membership event: %s", exc)
            return
        if event.node != self.node_id:
            self.memberships.invalidate(event.conversation)

    # Typing and presence from gateways ------------------------------------------------------------

    async def _on_ephemeral(self, msg: Msg) -> None:
        task = asyncio.create_task(self._handle_ephemeral(msg))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _handle_ephemeral(self, msg: Msg) -> None:
        # ``{"t": access token, "typing": {conversation, active}}`` or ``{"t", "online": bool}``; the
        # device is the token's (a presence change may come after the device logged out).
        try:
            event = decode_ephemeral(msg.data)
            claims = self.forwarded.verify(event.t, allow_revoked=isinstance(event, PresenceChanged))
            if claims is None:
                log.warning("ephemeral event without a valid access token dropped")
                return
            user_id, device_id = claims.user_id, claims.device_id
            if isinstance(event, TypingChanged):
                await self.lifecycle.typing(user_id, event.typing.conversation, event.typing.active)
            else:
                await self.lifecycle.device_changed(user_id, device_id, event.online)
        except ServerError:
            pass  # typing into a conversation the user is not in: nothing to tell anyone
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, ValidationError) as exc:
            log.warning("bad ephemeral event: %s", exc)
        except Exception:
            log.exception("ephemeral event failed")

    # Route barrier --------------------------------------------------------------------------------

    async def _on_barrier(self, msg: Msg) -> None:
        task = asyncio.create_task(self._answer_barrier(msg))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _answer_barrier(self, msg: Msg) -> None:
        # A gateway tells a device "ready" only once every API node routes to it, so that any message
        # committed after the device's first sync is pushed to it. The answer carries a mark of the
        # deliverer's (see Deliverer.mark), which the gateway hands back if it then resyncs every client.
        if msg.data.startswith(b"{"):
            self._on_resynced(msg.data)
            return
        try:
            revision = int(msg.data)
        except ValueError:
            return
        before = self.mirror.route_revision
        try:
            async with asyncio.timeout(2.0):
                await self.mirror.wait_for_routes(revision)
        except TimeoutError:
            # No answer rather than a false one: the gateway takes an answer for "pushes reach the device
            # from now on", and tells the device to sync again once a later round is answered. A view
            # that did not move at all while a newer revision exists is stalled, not just slow.
            if self.mirror.route_revision == before and self.bus.nc.is_connected:
                self.mirror.stalled(f"routes revision {revision} asked by a gateway, still at {before} after 2s")
            return
        if msg.reply and msg.reply.startswith(self._gateway_inboxes):  # never into somebody else's subject
            with contextlib.suppress(Exception):
                await msg.respond(b"%s %d" % (self.node_id.encode(), self.deliverer.mark()))

    def _on_resynced(self, data: bytes) -> None:
        # ``{"resynced": gateway node, "marks": {api node: mark}}``: the gateway told every client to resync
        # after it had our answer with that mark (GatewayNode._announce_resync). Only a gateway may publish
        # here; one that named another node could as well rewrite that node's routes. A mark we never gave
        # is ignored by the deliverer.
        try:
            notice = _RESYNCED.validate_json(data)
        except ValidationError as exc:
            log.warning("bad resync notice: %s", str(exc)[:200])
            return
        mark = notice["marks"].get(self.node_id)
        if mark is not None:
            self.deliverer.resynced(notice["resynced"], mark)

    # Sends forwarded by gateways --------------------------------------------------------------------

    async def _on_send(self, msg: Msg) -> None:
        # NATS runs one callback at a time per subscription: hand off so that sends batch up.
        task = asyncio.create_task(self._handle_send(msg))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _handle_send(self, msg: Msg) -> None:
        # ``{"tokens": [access token, ...], "sends": [[token index, send frame], ...]}``, sends in the
        # order devices sent them; the sender is the verified token's device. The answer has one ack or
        # error frame per send, one per line, in the same order, and goes only to a gateway's inbox (a
        # request could name any subject as its reply, such as another gateway's).
        if not (msg.reply or "").startswith(self._gateway_inboxes):
            log.warning("forwarded sends without a gateway inbox to answer dropped")
            return
        started = time.perf_counter()
        try:
            # The whole request in one pass (JSON parsed and every frame validated by pydantic-core); a
            # request that does not pass is taken apart send by send, so that only the bad ones fail.
            request = _FORWARDED.validate_json(msg.data)
            tokens: list[object] = list(request["tokens"])
            entries: list[object] = list(request["sends"])
        except ValidationError:
            try:
                loose = orjson.loads(msg.data)
                tokens, entries = loose["tokens"], loose["sends"]
                if not isinstance(tokens, list) or not isinstance(entries, list):
                    raise TypeError("not a list")
            except (orjson.JSONDecodeError, TypeError, KeyError) as exc:
                log.warning("malformed forwarded sends: %s", exc)
                with contextlib.suppress(Exception):
                    await msg.respond(_error(ErrorCode.BAD_REQUEST, "malformed forwarded sends"))
                return
        senders = [self.forwarded.verify(token) for token in tokens]
        self._send_batches.observe(len(entries))
        replies: list[bytes] = [b""] * len(entries)
        sends: list[tuple[int, str, SendFrame]] = []
        positions: list[int] = []
        for index, entry in enumerate(entries):
            which: object
            raw: object
            try:
                which, raw = entry  # type: ignore[misc]  # any shape may come: a wrong one raises TypeError
                frame = raw if isinstance(raw, SendFrame) else SendFrame.model_validate(raw)
                sender = senders[which] if isinstance(which, int) and 0 <= which < len(senders) else None
                if sender is None:
                    replies[index] = _error(
                        ErrorCode.UNAUTHORIZED, "the sending device is not authenticated", frame.client_msg_id
                    )
                    continue
                sends.append((sender.user_id, sender.device_id, frame))
                positions.append(index)
            except (ValidationError, ValueError, TypeError) as exc:
                replies[index] = _error(ErrorCode.BAD_REQUEST, f"malformed send: {exc}"[:300])
        try:
            results = await self.messaging.send_in_order(sends)
            for index, (_, _, frame), result in zip(positions, sends, results, strict=True):
                if isinstance(result, ServerError):
                    replies[index] = result.frame(frame.client_msg_id).model_dump_json(exclude_none=True).encode()
                else:
                    replies[index] = ack_frame(frame.client_msg_id, result.json)
        except Exception as exc:
            fault = classify(exc, self.db.health.database_path)
            if fault is None:
                log.exception("forwarded sends failed")
            error = None if fault is None else storage_error(fault.kind)
            for index, (_, _, frame) in zip(positions, sends, strict=True):
                replies[index] = (
                    _error(ErrorCode.INTERNAL, "internal error", frame.client_msg_id)
                    if error is None
                    else error.frame(frame.client_msg_id).model_dump_json(exclude_none=True).encode()
                )
        if msg.reply:
            try:
                await msg.respond(b"\n".join(replies))
            except Exception as exc:
                log.warning("cannot answer forwarded sends: %s", exc)
        self._send_seconds.observe(time.perf_counter() - started)
        for reply in replies:
            if reply.startswith(_ERROR_FRAME):
                with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                    self.errors.labels(str(orjson.loads(reply)["code"])).inc()

    # Sync frames forwarded by gateways ---------------------------------------------------------------

    async def _on_sync(self, msg: Msg) -> None:
        task = asyncio.create_task(self._handle_sync(msg))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _handle_sync(self, msg: Msg) -> None:
        # A :class:`SyncRequest`; the answer has one ``sync`` or ``error`` frame per sync, one per line,
        # in order (or ``again``: it did not fit), and goes only to a gateway's inbox.
        if not (msg.reply or "").startswith(self._gateway_inboxes):
            log.warning("forwarded syncs without a gateway inbox to answer dropped")
            return
        started = time.perf_counter()
        try:
            request = decode_event(SyncRequest, msg.data)
        except ValueError as exc:
            log.warning("malformed forwarded syncs: %s", str(exc)[:300])
            self.errors.labels(ErrorCode.BAD_REQUEST.value).inc()
            with contextlib.suppress(Exception):
                await msg.respond(_error(ErrorCode.BAD_REQUEST, "malformed forwarded syncs"))
            return
        devices = [self.forwarded.verify(token) for token in request.tokens]
        self._sync_batches.observe(len(request.syncs))
        answers = await asyncio.gather(
            *(self._answer_sync(query, devices, request.max_bytes) for query in request.syncs)
        )
        # One NATS message holds the whole answer: what does not fit is asked for again by the gateway
        # (the first always fits, each answer being under max_bytes, itself under half the payload).
        room = (self.bus.nc.max_payload or 1024 * 1024) - 1024
        lines: list[bytes] = []
        for answer in answers:
            if lines and len(answer) + 1 > room:
                lines.append(SYNC_AGAIN)
                continue
            room -= len(answer) + 1
            lines.append(answer)
        try:
            await msg.respond(b"\n".join(lines))
        except Exception as exc:
            log.warning("cannot answer forwarded syncs: %s", exc)
        self._sync_seconds.observe(time.perf_counter() - started)

    async def _answer_sync(self, query: SyncQuery, devices: list[Claims | None], max_bytes: int) -> bytes:
        """One sync's answer frame: the page ``GET /v1/conversations`` would give, under ``max_bytes``."""
        device = devices[query.t] if query.t < len(devices) else None
        if device is None:
            self.errors.labels(ErrorCode.UNAUTHORIZED.value).inc()
            return _error(ErrorCode.UNAUTHORIZED, "the syncing device is not authenticated", frame_id=query.id)
        limit, recent = query.q.limit, query.q.recent or 0
        head = b'{"type":"sync","id":%b,"page":' % orjson.dumps(query.id)
        try:
            while True:
                page = await self.sync.conversations(device.user_id, query.q.since, limit, recent)
                answer = b"%b%b}" % (head, page.__pydantic_serializer__.to_json(page))
                listed = len(page.conversations)
                if len(answer) <= max_bytes or (listed <= 1 and not recent):
                    return answer
                # Too big for one frame: fewer conversations, about as many as fit (the client follows the
                # cursor), and in the end none of their recent messages (it fetches those by history).
                if listed > 1:
                    limit = max(1, min(listed - 1, listed * max_bytes // len(answer)))
                else:
                    recent = 0
        except ServerError as exc:
            self.errors.labels(exc.code.value).inc()
            return exc.frame(frame_id=query.id).model_dump_json(exclude_none=True).encode()
        except Exception as exc:
            fault = classify(exc, self.db.health.database_path)
            if fault is None:
                log.exception("forwarded sync failed")
                self.errors.labels(ErrorCode.INTERNAL.value).inc()
                return _error(ErrorCode.INTERNAL, "internal error", frame_id=query.id)
            error = storage_error(fault.kind)
            self.errors.labels(error.code.value).inc()
            return error.frame(frame_id=query.id).model_dump_json(exclude_none=True).encode()


class _Forwarded(TypedDict):
    """A request of forwarded sends, as gateways make it (see :meth:`ApiNode._handle_send`)."""

    tokens: list[str]
    sends: list[tuple[int, SendFrame]]


_FORWARDED = TypeAdapter(_Forwarded)


class _Resynced(TypedDict):
    """A gateway's notice that it told every client to resync (see :meth:`ApiNode._on_resynced`)."""

    resynced: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    marks: Annotated[dict[str, int], Field(max_length=1024)]


_RESYNCED = TypeAdapter(_Resynced)

_ERROR_FRAME = b'{"type":"error"'
"""How an error answer to a forwarded send begins (``ErrorFrame`` serializes its type first)."""


def _error(code: ErrorCode, message: str, client_msg_id: str | None = None, *, frame_id: str | None = None) -> bytes:
    frame = ErrorFrame(code=code, message=message, client_msg_id=client_msg_id, id=frame_id)
    return frame.model_dump_json(exclude_none=True).encode()
