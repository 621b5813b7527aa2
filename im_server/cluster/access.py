"""IP allow and deny lists shared by the cluster, changeable at run time.

The lists live in the JetStream KV bucket ``<prefix>_access``: one key per entry,
``<list>.<version>-<network hex>-<prefix length>`` (``deny.4-0a000000-8`` is ``deny 10.0.0.0/8``), whose
value is JSON ``{"cidr", "note", "at"}``. Operators change it with ``im server access``
(:class:`AccessAdmin`); every API and gateway node follows it with an :class:`AccessMirror`, so a change
applies within moments and without a restart.

Nodes only read the bucket. A node that starts before the bucket exists (or while NATS refuses it)
admits everyone and keeps trying every ``IM_ACCESS_REFRESH`` seconds; a node that loses NATS keeps the
last lists it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import orjson
from nats.js.errors import BucketNotFoundError, KeyNotFoundError
from nats.js.kv import KeyValue

from ..bus.nats import Bus
from ..services.access import AccessRules, ListName, Network, parse_network

__all__ = ["AccessAdmin", "AccessEntry", "AccessMirror", "access_bucket", "entry_key"]

log = logging.getLogger(__name__)

LISTS: tuple[ListName, ...] = ("allow", "deny")


def access_bucket(prefix: str) -> str:
    """The bucket's name for a subject prefix."""
    return f"{prefix}_access"


def entry_key(name: ListName, network: Network) -> str:
    """The KV key of one entry (KV keys cannot hold ``:`` or ``/``, so the network is spelled in hex)."""
    return f"{name}.{network.version}-{network.network_address.packed.hex()}-{network.prefixlen}"


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One line of a list."""

    list: ListName
    network: Network
    note: str
    at: float
    """Seconds since the epoch when it was written."""


def _decode(key: str, value: bytes) -> AccessEntry:
    name, _, _ = key.partition(".")
    if name not in LISTS:
        raise ValueError(f"unknown list {name!r}")
    data = orjson.loads(value)
    network = parse_network(str(data["cidr"]))
    if entry_key(name, network) != key:
        raise ValueError("the key does not match the CIDR")
    return AccessEntry(name, network, str(data.get("note", ""))[:200], float(data.get("at", 0)))


class AccessMirror:
    """Follows ``<prefix>_access`` and keeps :attr:`rules` equal to it."""

    def __init__(self, bus: Bus, node_id: str) -> None:
        self._bus = bus
        self._node_id = node_id
        self._bucket = access_bucket(bus.settings.subject_prefix)
        self._entries: dict[str, AccessEntry] = {}
        self.rules = AccessRules()
        """The lists as last seen (replaced as a whole on every change)."""
        self.revision = 0
        """The newest bucket revision applied."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the lists if the bucket is there (else keep trying in the background), then follow them."""
        ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(ready), name=f"access-{self._node_id}")
        # Bounded: a missing bucket or a slow NATS must not hold up the node's start.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await asyncio.shield(ready)

    async def stop(self) -> None:
        """Stop following."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self, ready: asyncio.Future[None]) -> None:
        delay = self._bus.settings.access_refresh
        while True:
            try:
                bucket = await self._bus.js.key_value(self._bucket)
                await self._follow(bucket, ready)
            except asyncio.CancelledError:
                raise
            except BucketNotFoundError:
                if not ready.done():
                    log.info("node %s: no %s bucket yet; admitting every address", self._node_id, self._bucket)
                    ready.set_result(None)
            except Exception as exc:
                log.warning("node %s: cannot follow %s (keeping the last lists): %r", self._node_id, self._bucket, exc)
                if not ready.done():
                    ready.set_result(None)
            await asyncio.sleep(delay)

    async def _follow(self, bucket: KeyValue, ready: asyncio.Future[None]) -> None:
        watcher = await bucket.watchall()
        fresh: dict[str, AccessEntry] | None = {}  # the initial values, applied at once when complete
        try:
            async for entry in watcher:
                if entry is None:
                    if fresh is not None:
                        self._entries, fresh = fresh, None
                        self._publish()
                    if not ready.done():
                        ready.set_result(None)
                    continue
                target = fresh if fresh is not None else self._entries
                if entry.operation in ("DEL", "PURGE") or not entry.value:
                    target.pop(entry.key, None)
                else:
                    try:
                        target[entry.key] = _decode(entry.key, entry.value)
                    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
                        target.pop(entry.key, None)  # whatever the key held before is gone
                        log.warning("node %s: ignoring access entry %r: %s", self._node_id, entry.key, exc)
                if entry.revision and entry.revision > self.revision:
                    self.revision = entry.revision
                if fresh is None:
                    self._publish()
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves KeyWatcher.stop unannotated

    def _publish(self) -> None:
        self.rules = AccessRules.of((item.list, item.network) for item in self._entries.values())
        log.info(
            "node %s: access lists: %d allowed, %d denied networks",
            self._node_id,
            len(self.rules.allow),
            len(self.rules.deny),
        )


class AccessAdmin:
    """Changes the lists (``im server access``); needs a connected :class:`Bus` with the admin role."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._bucket_name = access_bucket(bus.settings.subject_prefix)
        self._bucket: KeyValue | None = None

    async def _kv(self) -> KeyValue:
        if self._bucket is None:
            try:
                self._bucket = await self._bus.js.key_value(self._bucket_name)
            except BucketNotFoundError:
                self._bucket = await self._bus.js.create_key_value(
                    bucket=self._bucket_name, history=1, replicas=self._bus.settings.nats_replicas
                )
        return self._bucket

    async def put(self, name: ListName, cidr: str, note: str = "") -> AccessEntry:
        """Add ``cidr`` to a list (replacing its note if it is there); raises ``ValueError`` for a bad CIDR."""
        network = parse_network(cidr)
        entry = AccessEntry(name, network, note[:200], time.time())
        value = orjson.dumps({"cidr": str(network), "note": entry.note, "at": entry.at})
        await (await self._kv()).put(entry_key(name, network), value)
        return entry

    async def remove(self, cidr: str, name: ListName | None = None) -> list[ListName]:
        """Take ``cidr`` off one list, or off both; returns the lists it was on."""
        network = parse_network(cidr)
        kv = await self._kv()
        removed: list[ListName] = []
        for candidate in (name,) if name else LISTS:
            key = entry_key(candidate, network)
            with contextlib.suppress(KeyNotFoundError):
                entry = await kv.get(key)
                if entry.value:
                    await kv.delete(key)
                    removed.append(candidate)
        return removed

    async def entries(self) -> list[AccessEntry]:
        """Every entry, allow list first, each sorted by network."""
        kv = await self._kv()
        found: list[AccessEntry] = []
        watcher = await kv.watchall(ignore_deletes=True)
        try:
            async for item in watcher:
                if item is None:
                    break
                if item.value:
                    with contextlib.suppress(ValueError, KeyError, TypeError, orjson.JSONDecodeError):
                        found.append(_decode(item.key, item.value))
        finally:
            with contextlib.suppress(Exception):
                await watcher.stop()  # type: ignore[no-untyped-call]  # nats-py leaves KeyWatcher.stop unannotated
        return sorted(found, key=lambda e: (LISTS.index(e.list), e.network.version, e.network))
