"""The embedded cluster behind ``im server up``: nats-server, M API processes, N gateway processes.

Several API processes (``apis``) share the API port with ``SO_REUSEPORT``: the kernel spreads new HTTP
connections over them, as it does for the workers of one web server, so clients keep one URL; sends
forwarded by gateways are spread by the NATS queue group whatever the port. That is one machine's
answer (Linux): across machines, each API node has its own address behind a load balancer (see
``docs/operations.md``). The API nodes are ``api-1``, ``api-2``...; each is supervised like a gateway.

Every part is a real separate process, supervised: a child that dies is restarted (with backoff),
nats-server included (on the same port and store, so the nodes reconnect to it and carry on), and
SIGINT or SIGTERM stops the gateways first (their clients are told to reconnect), then the API (which
commits what is queued), then NATS.

The bus is closed to strangers: nats-server listens on loopback unless ``nats_host`` says otherwise
(whatever ``host`` the API and gateways listen on), and only the users in ``<data dir>/nats-credentials``
may connect, each with its role's permissions (:mod:`im_server.cluster.credentials`). The data dir is
the owner's alone (0700); the secret, the credentials, the NATS configuration, the logs and the SQLite
database are created 0600.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .credentials import CREDENTIALS_DIR, ClusterCredentials
from .natsbin import private_dir, private_file, private_log, spawn, start_nats_server, wait_for_port

__all__ = ["ClusterPlan", "EmbeddedCluster"]

log = logging.getLogger(__name__)


@dataclass
class ClusterPlan:
    """What to start."""

    data_dir: Path
    api_port: int = 8080
    gateways: int = 2
    apis: int = 1
    """API processes; more than one share ``api_port`` (``SO_REUSEPORT``, Linux only)."""
    host: str = "127.0.0.1"
    """Where the API and the gateways listen."""
    nats_host: str = "127.0.0.1"
    """Where nats-server listens (loopback unless told otherwise, whatever ``host`` is)."""
    subject_prefix: str = field(default_factory=lambda: os.environ.get("IM_SUBJECT_PREFIX", "im"))
    db_url: str | None = None
    nats_url: str | None = None
    log_level: str = "INFO"
    extra_env: dict[str, str] = field(default_factory=dict)

    def gateway_port(self, index: int) -> int:
        """Gateways listen right after the API port."""
        return self.api_port + 1 + index

    def gateway_ids(self) -> list[str]:
        """``gw-1``, ``gw-2``, ..."""
        return [f"gw-{index + 1}" for index in range(self.gateways)]

    def api_ids(self) -> list[str]:
        """``api-1``, ``api-2``, ..."""
        return [f"api-{index + 1}" for index in range(self.apis)]


@dataclass
class _Child:
    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    process: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)


class EmbeddedCluster:
    """Starts, supervises and stops the processes of a :class:`ClusterPlan`."""

    def __init__(self, plan: ClusterPlan, *, on_event: Callable[[str], None] | None = None) -> None:
        self.plan = plan
        self._say = on_event or (lambda text: log.info("%s", text))
        self._nats: subprocess.Popen[bytes] | None = None
        self._nats_restarts: list[float] = []
        self.nats_url = plan.nats_url
        self._children: list[_Child] = []
        self._stopping = False
        self.credentials: ClusterCredentials | None = None
        """The NATS users, when this cluster runs its own nats-server."""

    @property
    def api_url(self) -> str:
        """Where the API listens."""
        return f"http://{self.plan.host}:{self.plan.api_port}"

    def gateway_urls(self) -> list[str]:
        """Where the gateways listen."""
        return [f"ws://{self.plan.host}:{self.plan.gateway_port(i)}/ws" for i in range(self.plan.gateways)]

    def _secret(self) -> str:
        path = self.plan.data_dir / "secret.key"
        if not path.exists():
            private_file(path, secrets.token_urlsafe(48), replace=False)
        return path.read_text().strip()

    def start(self) -> None:
        """Start everything and wait until the API sees every gateway."""
        plan = self.plan
        existed = plan.data_dir.exists()
        private_dir(plan.data_dir)
        if existed and plan.data_dir.stat().st_mode & 0o077:
            self._say(f"warning: {plan.data_dir} can be read by other users; it holds the secrets (chmod 700 it)")
        logs = private_dir(plan.data_dir / "logs")
        inherited = dict(os.environ)
        if self.nats_url is None:
            self.credentials = ClusterCredentials.load_or_create(plan.data_dir / CREDENTIALS_DIR, plan.gateway_ids())
            self._nats, self.nats_url = start_nats_server(
                plan.data_dir / "nats",
                host=plan.nats_host,
                log_file=logs / "nats.log",
                authorization=self.credentials.authorization(plan.subject_prefix),
            )
            self._say(f"nats-server with JetStream at {self.nats_url}, users in {self.credentials.directory}")
            for name in ("IM_NATS_USER", "IM_NATS_PASSWORD", "IM_NATS_NKEY_SEED_FILE", "IM_NATS_CREDS_FILE"):
                inherited.pop(name, None)  # our own server knows only the users it was given
        db_url = plan.db_url or f"sqlite+aiosqlite:///{(plan.data_dir / 'im.db').resolve()}"
        base = {
            **inherited,
            "IM_SUBJECT_PREFIX": plan.subject_prefix,
            "IM_NATS_URL": self.nats_url,
            "IM_DB_URL": db_url,
            "IM_SECRET_KEY": os.environ.get("IM_SECRET_KEY") or self._secret(),
            "IM_LOG_LEVEL": plan.log_level,
            **plan.extra_env,
        }
        python = [sys.executable, "-m", "im_server"]
        shared = {"IM_API_REUSE_PORT": "1"} if plan.apis > 1 else {}
        for node_id in plan.api_ids():
            env = {
                **base,
                **self._nats_env("api"),
                **shared,
                "IM_API_HOST": plan.host,
                "IM_API_PORT": str(plan.api_port),
                "IM_NODE_ID": node_id,
            }
            self._children.append(_Child(node_id, [*python, "api"], env, plan.api_port))
        for index in range(plan.gateways):
            port = plan.gateway_port(index)
            env = {
                **base,
                **self._nats_env(f"gw-{index + 1}"),
                "IM_GATEWAY_HOST": plan.host,
                "IM_GATEWAY_PORT": str(port),
                "IM_NODE_ID": f"gw-{index + 1}",
            }
            self._children.append(_Child(f"gw-{index + 1}", [*python, "gateway"], env, port))
        for child in self._children:
            self._spawn(child)
        for child in self._children:
            assert child.process is not None
            try:
                wait_for_port(plan.host, child.port, process=child.process, timeout=60)
            except RuntimeError as exc:
                raise RuntimeError(f"{child.name}: {exc}; its log ends with:\n{self._log_tail(child)}") from None
        self._wait_until_gateways_live()

    def _log_tail(self, child: _Child, lines: int = 12) -> str:
        """The last lines of a child's log (why it exited), bounded in size."""
        path = self.plan.data_dir / "logs" / f"{child.name}.log"
        try:
            with path.open("rb") as log_file:
                log_file.seek(0, 2)
                log_file.seek(max(0, log_file.tell() - 8192))
                text = log_file.read().decode(errors="replace")
        except OSError as exc:
            return f"(cannot read {path}: {exc.strerror})"
        return "\n".join(text.splitlines()[-lines:]) or "(empty)"

    def _nats_env(self, user: str) -> dict[str, str]:
        return self.credentials.env(user) if self.credentials is not None else {}

    def _spawn(self, child: _Child) -> None:
        log_path = self.plan.data_dir / "logs" / f"{child.name}.log"
        with private_log(log_path) as output:
            child.process = spawn(child.command, env=child.env, output=output)

    def _wait_until_gateways_live(self, timeout: float = 30) -> None:
        # Whichever API process answers, it must see every gateway and every API node.
        deadline = time.monotonic() + timeout
        expected = set(self.plan.gateway_ids())
        apis = set(self.plan.api_ids())
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"{self.api_url}/healthz", timeout=2).json()
                if expected <= set(health.get("gateways", [])) and apis <= set(health.get("apis", apis)):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.1)
        raise TimeoutError("the gateways and API nodes did not register in time")

    def supervise(self, poll: float = 0.5) -> None:
        """Restart children that exit, until :meth:`request_stop` (or a signal) is seen."""
        while not self._stopping:
            for child in self._children:
                process = child.process
                if process is not None and process.poll() is not None and not self._stopping:
                    self._restart(child, process.returncode)
            if self._nats is not None and self._nats.poll() is not None and not self._stopping:
                self._restart_nats(self._nats.returncode)
            time.sleep(poll)

    def _restart_nats(self, code: int) -> None:
        # Same port (the nodes' reconnect loops find it again) and same store (JetStream keeps the
        # registries, revocations and files); the nodes heal on reconnect.
        now = time.monotonic()
        self._nats_restarts = [t for t in self._nats_restarts if now - t < 60]
        if len(self._nats_restarts) >= 5:
            raise RuntimeError(f"nats-server keeps exiting (code {code}); see {self.plan.data_dir}/logs/nats.log")
        self._nats_restarts.append(now)
        delay = 0.2 * 2 ** (len(self._nats_restarts) - 1)
        self._say(f"nats-server exited with code {code}; restarting in {delay:.1f}s")
        time.sleep(delay)
        assert self.nats_url is not None
        port = int(self.nats_url.rsplit(":", 1)[1])
        for attempt in range(20):
            try:
                # The same listener and users as at the start: a restarted server must not open the bus.
                self._nats, _ = start_nats_server(
                    self.plan.data_dir / "nats",
                    host=self.plan.nats_host,
                    port=port,
                    log_file=self.plan.data_dir / "logs" / "nats.log",
                    authorization=None
                    if self.credentials is None
                    else self.credentials.authorization(self.plan.subject_prefix),
                )
                return
            except (RuntimeError, TimeoutError) as exc:
                # The old process's port may still be held for a moment.
                if attempt == 19:
                    raise
                log.warning("nats-server did not start yet (%s)", exc)
                time.sleep(0.25)

    def _restart(self, child: _Child, code: int) -> None:
        now = time.monotonic()
        child.restarts = [t for t in child.restarts if now - t < 60]
        if len(child.restarts) >= 5:
            raise RuntimeError(f"{child.name} keeps exiting (code {code}); see {self.plan.data_dir}/logs/")
        child.restarts.append(now)
        delay = 0.5 * 2 ** (len(child.restarts) - 1)
        self._say(f"{child.name} exited with code {code}; restarting in {delay:.1f}s")
        time.sleep(delay)
        self._spawn(child)

    def request_stop(self, *_: object) -> None:
        """Ask :meth:`supervise` to return (safe to call from a signal handler)."""
        self._stopping = True

    def stop(self, timeout: float = 15) -> None:
        """Stop gateways, then the API, then NATS; each gets ``timeout`` seconds before being killed."""
        self._stopping = True
        gateways = [child for child in self._children if not child.name.startswith("api")]
        api = [child for child in self._children if child.name.startswith("api")]
        for group in (gateways, api):
            processes = [child.process for child in group if child.process is not None]
            _terminate(processes, timeout)
        if self._nats is not None:
            _terminate([self._nats], timeout)

    def run(self) -> None:
        """Supervise until SIGINT or SIGTERM, then stop."""
        previous = {sig: signal.signal(sig, self.request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.stop()


def _terminate(processes: list[subprocess.Popen[bytes]], timeout: float) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
