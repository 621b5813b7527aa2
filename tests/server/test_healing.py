"""The pure parts of healing: node liveness judged by heartbeats, remembered recipients, storage faults."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from im_schema.errors import ErrorCode
from im_server.bus.routes import NodeInfo, NodeTable, RouteTable, plan_delivery
from im_server.errors import storage_error
from im_server.storage.faults import StorageHealth, classify


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def info(node_id: str, role: str = "gateway") -> NodeInfo:
    return NodeInfo(node_id=node_id, role=role, url=f"ws://{node_id}", connections=0, started_at=0.0)


# Node liveness -----------------------------------------------------------------------------------------


def test_a_frozen_table_does_not_age_nodes_while_the_observer_is_cut_off():
    clock = Clock()
    table = NodeTable(ttl=1.5, clock=clock)
    table.heartbeat(info("g1"))
    clock.now = 1.0
    table.freeze()
    clock.now = 60.0  # the observer was away for a minute: the node is not judged by that
    assert table.is_live("g1") and [n.node_id for n in table.live("gateway")] == ["g1"]
    assert table.frozen

    fresh = NodeTable(ttl=1.5, clock=clock)
    fresh.heartbeat(info("g2"))
    table.replace(fresh)  # the registry, read again: g1 expired meanwhile, g2 is new
    assert not table.frozen
    assert [n.node_id for n in table.live()] == ["g2"] and table.known() == ["g2"]
    clock.now = 62.0
    assert not table.is_live("g2")  # ageing again


def test_a_heartbeat_read_from_a_snapshot_is_judged_by_when_it_was_written():
    clock = Clock()
    clock.now = 100.0
    table = NodeTable(ttl=1.5, clock=clock)
    table.heartbeat(info("old"), age=1.5)
    table.heartbeat(info("new"), age=0.2)
    assert not table.is_live("old") and table.is_live("new")


# Remembering who missed a push --------------------------------------------------------------------------


def test_plan_delivery_reports_the_users_of_nodes_that_look_dead():
    clock = Clock()
    nodes = NodeTable(ttl=1.5, clock=clock)
    nodes.heartbeat(info("live"))
    routes = RouteTable()
    routes.set(1, "phone", "live")
    routes.set(1, "laptop", "dead")
    routes.set(2, "phone", "dead")
    unrouted: dict[str, set[int]] = {}
    plan = plan_delivery([(b"m", [1, 2], None)], routes, nodes, unrouted)
    assert plan == {"live": [(b"m", [(1, "phone")])]}
    assert unrouted == {"dead": {1, 2}}
    assert sorted(routes.on_node("dead")) == [(1, "laptop"), (2, "phone")]
    assert sorted(routes.users()) == [1, 2]


def test_route_table_replace_keeps_the_object_others_hold():
    routes = RouteTable()
    routes.set(1, "a", "g1")
    routes.remove(3, "x", at=10.0)
    fresh = RouteTable()
    fresh.set(2, "b", "g2")
    holder = routes
    routes.replace(fresh)
    assert holder.devices(2) == {"b": "g2"} and holder.devices(1) == {}
    assert holder.last_seen(3) == 10.0  # last-seen times survive a reload


# Storage faults -----------------------------------------------------------------------------------------


def test_lock_contention_is_busy(tmp_path: Path):
    path = tmp_path / "db.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        with pytest.raises(OperationalError) as raised, engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))
        fault = classify(raised.value)
        assert fault is not None and fault.kind == "busy"
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        engine.dispose()


def test_full_disk_and_lost_connections_are_told_apart():
    full = OSError(errno.ENOSPC, "No space left on device")
    assert (fault := classify(full)) is not None and fault.kind == "full"
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
    assert (fault := classify(refused)) is not None and fault.kind == "unavailable"

    class PgError(Exception):
        def __init__(self, sqlstate: str) -> None:
            super().__init__(sqlstate)
            self.sqlstate = sqlstate

    wrapped = RuntimeError("commit failed")
    wrapped.__cause__ = PgError("53100")  # disk_full
    assert (fault := classify(wrapped)) is not None and fault.kind == "full"
    assert (fault := classify(PgError("40P01"))) is not None and fault.kind == "busy"  # deadlock
    assert (fault := classify(PgError("08006"))) is not None and fault.kind == "unavailable"
    assert classify(PgError("23505")) is None  # a unique violation is not a storage fault
    assert classify(ValueError("a bug")) is None


def test_each_kind_has_its_own_code_and_health_follows_the_last_writes():
    assert storage_error("busy").code is ErrorCode.STORAGE_BUSY
    assert storage_error("full").code is ErrorCode.STORAGE_FULL
    assert storage_error("unavailable").code is ErrorCode.STORAGE_UNAVAILABLE
    assert all(storage_error(kind).status == 503 for kind in ("busy", "full", "unavailable"))

    health = StorageHealth()
    assert health.writable() == (True, None)
    health.failed(OSError(errno.ENOSPC, "No space left on device"))
    assert health.writable() == (False, "full") and health.counts["full"] == 1
    health.ok()
    assert health.writable() == (True, None)
    health.failed(sqlite3.OperationalError("database is locked"))
    assert health.writable() == (True, None)  # contention is not a degraded database
