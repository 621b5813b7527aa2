"""``python -m bench`` at a tiny size: every workload runs against a real cluster and loses nothing.

The cluster is the embedded one of ``im server up`` (its own nats-server with per-role credentials, real
API and gateway processes); the clients are real WebSocket clients in a forked process. Only counts and
the shape of the output are checked, never a duration.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.__main__ import main
from bench.clients import Workers
from bench.report import chart, markdown
from bench.system import Server, sample
from bench.workloads import WORKLOADS, Sizes

TINY = Sizes(
    w1_pairs=2,
    w1_rate=40.0,
    w1_duration=0.3,
    w2_pairs=2,
    w2_rates=[20.0, 40.0],
    w2_duration=0.3,
    w2_keep_going=True,
    w3_members=5,
    w3_messages=2,
    w3_interval=0.05,
    w4_connections=4,
    w4_idle=0.2,
    w4_settle=0.0,
    w5_messages=[30],
    storm_clients=6,
    storm_timeout=60.0,
    drain=20.0,
)


@pytest.fixture(scope="module")
def bench_cluster() -> Iterator[tuple[Server, Workers]]:
    server = Server(gateways=2)
    url = server.start()
    workers = Workers(url, 1)
    yield server, workers
    workers.close()
    server.stop()


def _integrity(figures: dict[str, Any]) -> None:
    assert "error" not in figures, figures.get("error")
    assert figures["lost"] == 0
    assert figures.get("late", 0) == 0  # stored and acknowledged, but not pushed within the drain
    assert figures["duplicated"] == 0
    json.dumps(figures)  # JSON-ready


def test_w1_pairs_at_a_rate(bench_cluster: tuple[Server, Workers]) -> None:
    server, workers = bench_cluster
    figures = WORKLOADS["W1"](server, workers, TINY)
    _integrity(figures)
    assert figures["offered"] == figures["sent"] == figures["acked"] == figures["delivered"] == 12
    assert figures["errors"] == 0
    assert figures["server_cpu_ms_per_msg"] is not None
    assert set(figures["cpu_percent_by_process"]) == {"api-1", "gw-1", "gw-2", "nats"}
    assert figures["delivery_p50_ms"] <= figures["delivery_p99_ms"] <= figures["delivery_max_ms"]


def test_w2_steps(bench_cluster: tuple[Server, Workers]) -> None:
    server, workers = bench_cluster
    figures = WORKLOADS["W2"](server, workers, TINY)
    _integrity(figures)
    assert [step["offered_rate"] for step in figures["steps"]] == [20.0, 40.0]
    assert [(step["offered"], step["sent"], step["delivered"]) for step in figures["steps"]] == [
        (6, 6, 6),
        (12, 12, 12),
    ]


def test_w3_group_fan_out(bench_cluster: tuple[Server, Workers]) -> None:
    server, workers = bench_cluster
    figures = WORKLOADS["W3"](server, workers, TINY)
    _integrity(figures)
    assert figures["online"] == 5
    assert figures["delivered"] == 5 * 2
    assert figures["last_member_max_ms"] is not None


def test_w4_idle_connections(bench_cluster: tuple[Server, Workers]) -> None:
    server, workers = bench_cluster
    figures = WORKLOADS["W4"](server, workers, TINY)
    assert "error" not in figures, figures.get("error")
    assert figures["connected"] == 4
    assert figures["failed"] == 0
    assert set(figures["bytes_per_connection_by_process"]) == {"api-1", "gw-1", "gw-2", "nats"}
    json.dumps(figures)


def test_w5_offline_catch_up(bench_cluster: tuple[Server, Workers]) -> None:
    server, workers = bench_cluster
    figures = WORKLOADS["W5"](server, workers, TINY)
    _integrity(figures)
    assert figures["runs"][0]["received"] == 30


def test_server_processes_are_read_from_proc(bench_cluster: tuple[Server, Workers]) -> None:
    server, _ = bench_cluster
    now = sample(server.pids)
    assert set(now.rss) == {"api-1", "gw-1", "gw-2", "nats"}
    assert all(rss > 0 for rss in now.rss.values())
    assert now.cpu_total > 0


def test_reconnect_storm() -> None:
    # A cluster of its own: the storm kills a gateway.
    server = Server(gateways=2)
    url = server.start()
    workers = Workers(url, 1)
    try:
        figures = WORKLOADS["storm"](server, workers, TINY)
    finally:
        workers.close()
        server.stop()
    _integrity(figures)
    assert figures["clients"] == 6
    assert figures["acked"] == 6
    assert figures["resynced_s"] is not None
    assert figures["reconnected"] == figures["on_killed_gateway"]


def test_storm_needs_a_cluster_of_its_own() -> None:
    figures = WORKLOADS["storm"](Server(url="http://127.0.0.1:9"), None, TINY)  # type: ignore[arg-type]
    assert "skipped" in figures


def test_the_command_writes_json_markdown_and_a_chart(
    bench_cluster: tuple[Server, Workers], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Against a running cluster by URL, with the API's process id given for /proc.
    server, _ = bench_cluster
    assert server.url is not None
    sets = [f"--set={name}={value}" for name, value in (("w1_pairs", 1), ("w1_rate", 20), ("w1_duration", 0.2))]
    target = ["--url", server.url, "--server-pid", f"api={server.pids['api-1']}"]
    code = main(["--only", "W1", "--procs", "1", *target, *sets, "--out", str(tmp_path)])
    assert code == 0
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert document == json.loads((tmp_path / "results.json").read_text())
    assert list(document["workloads"]) == ["W1"]
    assert document["workloads"]["W1"]["lost"] == 0
    assert document["meta"]["sizes"]["w1_pairs"] == 1
    assert document["meta"]["server_processes"] == ["api"]
    assert set(document["workloads"]["W1"]["cpu_percent_by_process"]) == {"api"}
    assert len(document["meta"]["loadavg_before"]) == 3
    table = (tmp_path / "results.md").read_text()
    assert "| W1: 1 pairs, 20 msgs/s" in table
    assert table in err
    assert (tmp_path / "latency.png").exists() or "matplotlib is not installed" in err


def test_report_without_latency_says_so(tmp_path: Path) -> None:
    document = {
        "meta": {
            "command": "python -m bench",
            "started_at": "now",
            "cpus": 2,
            "loadavg_before": [1.0, 1.0, 1.0],
            "loadavg_after": [1.0, 1.0, 1.0],
            "pin": False,
        },
        "workloads": {"storm": {"skipped": "not here"}, "W4": {"error": "Traceback\nValueError: boom"}},
    }
    assert "skipped: not here" in markdown(document)
    assert "failed: ValueError: boom" in markdown(document)
    assert chart(document, tmp_path / "x.png").startswith("no chart")


def test_sizes_scale_and_set() -> None:
    sizes = Sizes().scaled(0.01)
    assert sizes.w1_pairs == 1
    assert sizes.w4_connections == 50
    assert sizes.set("w2_rates=100,200").w2_rates == [100.0, 200.0]
    assert sizes.set("w5_messages=10").w5_messages == [10]
    assert sizes.set("w2_keep_going=yes").w2_keep_going is True
    assert dataclasses.asdict(sizes)["w1_duration"] == 20.0
    for bad in ("nope=1", "w1_pairs=", "w1_pairs=many", "=3"):
        with pytest.raises(ValueError):  # noqa: PT011
            sizes.set(bad)


def test_unknown_workload_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--only", "W9"])
    assert "unknown workload" in capsys.readouterr().err


def test_a_failing_command_leaves_the_processes_in_step(bench_cluster: tuple[Server, Workers]) -> None:
    _, workers = bench_cluster
    with pytest.raises(RuntimeError, match="no_such_command"):
        workers.all("no_such_command")
    assert len(workers.all("group_count")) == 1
