"""What ``im server up`` leaves on disk is private, and its NATS is on loopback and closed to strangers."""

from __future__ import annotations

import asyncio
import stat
import sys
from pathlib import Path

import nats
import pytest
from nats.errors import Error as NatsError

from im_sdk import AsyncClient
from im_server.cluster.embedded import ClusterPlan, EmbeddedCluster
from im_server.cluster.natsbin import free_port_block

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_data_dir_is_private_and_nats_needs_credentials(tmp_path: Path):
    data = tmp_path / "data"
    port = free_port_block(2)
    # The API and gateway listen on every address; NATS stays on loopback all the same.
    plan = ClusterPlan(data_dir=data, api_port=port, gateways=1, host="0.0.0.0", extra_env=_fast())
    cluster = EmbeddedCluster(plan, on_event=lambda text: None)
    try:
        cluster.start()
        assert cluster.nats_url is not None and cluster.nats_url.startswith("nats://127.0.0.1:")
        assert 'listen: "127.0.0.1:' in (data / "nats" / "nats.conf").read_text()

        async def register() -> None:
            async with AsyncClient(f"http://127.0.0.1:{port}") as client:
                await client.register("someone", "a long enough password")
            with pytest.raises(NatsError, match="Authorization Violation"):
                await nats.connect(cluster.nats_url, allow_reconnect=False, max_reconnect_attempts=0)

        asyncio.run(register())
        assert _mode(data) == 0o700
        for name in ("logs", "nats", "nats-credentials"):
            assert _mode(data / name) == 0o700, name
        private = [
            data / "secret.key",
            data / "im.db",
            data / "im.db-wal",
            data / "im.db-shm",
            data / "nats" / "nats.conf",
            data / "nats-credentials" / "api.nk",
            data / "nats-credentials" / "gw-1.nk",
            data / "nats-credentials" / "admin.nk",
            *sorted((data / "logs").iterdir()),
        ]
        for path in private:
            assert _mode(path) == 0o600, path
        # The configuration names public keys only; the seeds stay in their files.
        seed = (data / "nats-credentials" / "api.nk").read_text().strip()
        assert seed.startswith("SU") and seed not in (data / "nats" / "nats.conf").read_text()
    finally:
        cluster.stop()


def _fast() -> dict[str, str]:
    return {"IM_ARGON2_MEMORY_COST": "1024", "IM_ARGON2_TIME_COST": "1", "IM_LOG_LEVEL": "WARNING"}
