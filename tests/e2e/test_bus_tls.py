"""TLS to NATS by setting: a node verifies the server against a CA and presents its certificate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
import trustme
from nats.errors import Error as NatsError

from im_server.bus.nats import Bus, connect_options
from im_server.cluster.credentials import ClusterCredentials
from im_server.cluster.natsbin import free_port, start_nats_server
from im_server.settings import Settings


@pytest.fixture(scope="module")
def tls_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, ClusterCredentials]]:
    """A nats-server that requires TLS with a client certificate, and the cluster's users."""
    directory = tmp_path_factory.mktemp("nats-tls")
    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    client_cert = ca.issue_cert("im-node")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    server_cert.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    client_cert.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    client_cert.private_key_pem.write_to_path(str(directory / "client.key"))
    credentials = ClusterCredentials.load_or_create(directory / "credentials", ["gw-1"])
    tls = (
        f'tls {{ cert_file: "{directory / "server.pem"}", key_file: "{directory / "server.pem"}", '
        f'ca_file: "{directory / "ca.pem"}", verify: true }}\n'
    )
    process, url = start_nats_server(
        directory,
        port=free_port(),
        log_file=directory / "nats.log",
        authorization=credentials.authorization("tls") + tls,
    )
    yield url, directory, credentials
    process.terminate()
    process.wait(10)


async def test_a_node_connects_over_tls_with_its_certificate(tls_nats):
    url, directory, credentials = tls_nats
    settings = Settings(
        nats_url=url,
        subject_prefix="tls",
        nats_tls_ca_file=directory / "ca.pem",
        nats_tls_cert_file=directory / "client.pem",
        nats_tls_key_file=directory / "client.key",
        **credentials.settings("api"),
    )
    bus = Bus(settings, name="api-tls")
    await bus.connect()  # TLS, the nkey, and the API role's bucket creation
    try:
        assert bus.nc.is_connected
        await bus.revoked.put("session", b"{}")
    finally:
        await bus.close()


async def test_nats_over_tls_refuses_nodes_without_a_certificate_or_the_ca(tls_nats):
    url, directory, credentials = tls_nats
    base = {"nats_url": url, "subject_prefix": "tls", **credentials.settings("api")}
    without_certificate = Settings(**base, nats_tls_ca_file=directory / "ca.pem")
    without_ca = Settings(
        **base, nats_tls_cert_file=directory / "client.pem", nats_tls_key_file=directory / "client.key"
    )
    for settings in (without_certificate, without_ca):
        options = connect_options(settings, role="api", name="api-tls")
        with pytest.raises((NatsError, OSError)):
            await nats.connect(**options, allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=2)
