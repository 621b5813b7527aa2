"""The server side of a benchmark run: starting a cluster, pinning it, and reading its CPU and memory.

:class:`Server` either starts the embedded cluster of ``im server up`` (nats-server with per-role
credentials, one API, N gateways, all real processes, not supervised so that a killed gateway stays dead)
with the benchmark settings of :data:`bench._common.BENCH_ENV`, or stands for a running cluster given by
URL (then CPU and memory are read only for the process ids given). CPU time and resident memory are read
from ``/proc`` for every server process, its threads and its descendants.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench._common import BENCH_ENV
from im_server.cluster.embedded import ClusterPlan, EmbeddedCluster
from im_server.cluster.natsbin import free_port_block

__all__ = ["SERVER_ENV", "ProcSample", "Server", "pin_clients", "pin_server", "sample"]

SERVER_ENV = {**BENCH_ENV, "IM_DM_REQUIRES_FRIENDSHIP": "false", "IM_LOG_LEVEL": "WARNING"}
"""Every per-user limit lifted, direct messages without friendship: the benchmark measures the server."""

_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class ProcSample:
    """CPU seconds (user + system) and resident memory (bytes) of a set of processes at one moment."""

    cpu: dict[str, float] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)

    @property
    def cpu_total(self) -> float:
        return sum(self.cpu.values())

    @property
    def rss_total(self) -> int:
        return sum(self.rss.values())


def _family(pid: int) -> list[int]:
    """``pid`` and its descendants (``/proc/<pid>/task/*/children``)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                children = Path(f"/proc/{current}/task/{task}/children").read_text().split()
                todo += [int(child) for child in children]
        except OSError:
            continue
    return found


def _cpu_and_rss(pid: int) -> tuple[float, int]:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    cpu = (int(fields[11]) + int(fields[12])) / _TICK
    rss = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return cpu, rss


def sample(pids: dict[str, int]) -> ProcSample:
    """Read CPU time and RSS of each named process (with its descendants) now."""
    result = ProcSample()
    for name, pid in pids.items():
        cpu, rss = 0.0, 0
        for member in _family(pid):
            one_cpu, one_rss = _cpu_and_rss(member)
            cpu += one_cpu
            rss += one_rss
        result.cpu[name] = cpu
        result.rss[name] = rss
    return result


def _cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin_server(pids: dict[str, int], core: int = 0) -> None:
    """Put every thread of every server process (and its descendants) on ``core``."""
    for pid in pids.values():
        for member in _family(pid):
            try:
                for task in os.listdir(f"/proc/{member}/task"):
                    os.sched_setaffinity(int(task), {core})
            except OSError:
                continue


def pin_clients(server_core: int = 0) -> list[int]:
    """Keep this process (and the client processes it starts later) off the server's core."""
    others = [core for core in _cores() if core != server_core] or _cores()
    os.sched_setaffinity(0, set(others))
    return others


class Server:
    """A cluster to measure: started here (``url=None``) or running already."""

    def __init__(
        self,
        *,
        url: str | None = None,
        gateways: int = 2,
        pids: dict[str, int] | None = None,
        db: str | None = None,
        pin: bool = False,
    ) -> None:
        self.url = url
        self.gateways = gateways
        self.pids: dict[str, int] = dict(pids or {})
        self.db = db
        self.pin = pin
        self.cluster: EmbeddedCluster | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def started_here(self) -> bool:
        return self.cluster is not None

    def start(self) -> str:
        """Start the cluster unless one was given; returns the API URL."""
        if self.url is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="im-bench-")
            if self.pin:
                # Children inherit the affinity: nats-server and the nodes start on core 0 only.
                os.sched_setaffinity(0, {0})
            for attempt in range(3):
                plan = ClusterPlan(
                    data_dir=Path(self._tmp.name) / f"data-{attempt}",
                    api_port=free_port_block(self.gateways + 1),
                    gateways=self.gateways,
                    db_url=self.db,
                    extra_env=SERVER_ENV,
                    log_level="WARNING",
                )
                self.cluster = EmbeddedCluster(plan, on_event=lambda _text: None)
                try:
                    self.cluster.start()
                    break
                except RuntimeError as exc:
                    # The free ports were taken between the pick and the bind (a busy machine): pick again.
                    if attempt == 2 or "address already in use" not in str(exc):
                        self.stop()
                        raise
                    self.cluster.stop(timeout=10)
                except BaseException:
                    self.stop()
                    raise
            self.url = self.cluster.api_url
            # The embedded cluster keeps its processes private; the benchmark needs their ids for /proc.
            for child in self.cluster._children:
                if child.process is not None:
                    self.pids[child.name] = child.process.pid
            if self.cluster._nats is not None:
                self.pids["nats"] = self.cluster._nats.pid
        if self.pin:
            pin_server(self.pids)
            pin_clients()
        return self.url

    def kill_gateway(self, name: str = "gw-1") -> None:
        """SIGKILL one gateway of a cluster started here (it stays dead: nothing supervises it)."""
        assert self.cluster is not None, "a gateway can only be killed in a cluster the benchmark started"
        for child in self.cluster._children:
            if child.name == name and child.process is not None:
                child.process.kill()
                child.process.wait()
        self.pids.pop(name, None)

    def stop(self) -> None:
        """Stop a cluster started here and remove its data."""
        if self.cluster is not None:
            self.cluster.stop(timeout=10)
            self.cluster = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
