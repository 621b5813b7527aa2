"""docs/deployment/ holds files an operator copies: they must parse, and name only settings, commands,
flags, services and files that exist."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from im_server.cluster.credentials import ClusterCredentials
from im_server.cluster.natsbin import nats_server_binary
from im_server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOYMENT = ROOT / "docs" / "deployment"
GUIDE = ROOT / "docs" / "deployment.md"
OPERATOR_FILES = ("secrets/", "haproxy/im.pem")
"""Files the operator makes (seeds, the users block, the certificate): named, not shipped."""


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOYMENT / "compose.yaml").read_text())
    return data


def _env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_the_compose_file_is_valid_and_complete():
    compose = _compose()
    services = compose["services"]
    for name in ("nats-1", "nats-2", "nats-3", "postgres", "api-1", "api-2", "gateway-1", "gateway-2"):
        assert name in services
    for name in ("haproxy", "prometheus", "grafana"):
        assert name in services
    for name, service in services.items():
        assert "image" in service, name
        for dependency in service.get("depends_on", []):
            assert dependency in services, (name, dependency)
        mounts = [volume.split(":")[0] for volume in service.get("volumes", []) if volume.startswith(".")]
        files = [*mounts, *service.get("env_file", [])]
        for relative in files:
            if relative.removeprefix("./").startswith(OPERATOR_FILES):
                continue
            assert (DEPLOYMENT / relative).exists(), (name, relative)
    for secret in compose["secrets"].values():
        assert secret["file"].removeprefix("./").startswith(OPERATOR_FILES)
    # Every node lists the three NATS servers, each node its own first; the buckets have three replicas.
    common = _env_file(DEPLOYMENT / "env" / "common.env")
    assert common["IM_NATS_REPLICAS"] == "3"
    firsts = set()
    for name in ("api-1", "api-2", "gateway-1", "gateway-2"):
        urls = services[name]["environment"]["IM_NATS_URL"].split(",")
        assert sorted(urls) == [f"nats://nats-{i}:4222" for i in (1, 2, 3)]
        firsts.add(urls[0])
    assert len(firsts) == 3
    assert (ROOT / "docs" / "grafana" / "im-dashboard.json").exists()


def _im_variables(text: str) -> set[str]:
    return set(re.findall(r"\bIM_[A-Z0-9_]+[A-Z0-9]\b", text))


def test_every_im_variable_named_is_a_setting():
    known = {f"IM_{name.upper()}" for name in Settings.model_fields}
    texts = [GUIDE.read_text()] + [path.read_text() for path in DEPLOYMENT.rglob("*") if path.is_file()]
    named = set().union(*(_im_variables(text) for text in texts))
    named -= {"IM_TEST_PG_URL"}
    assert named and named <= known, sorted(named - known)


@pytest.mark.parametrize("node", ["api.env", "gateway-1.env", "gateway-2.env"])
def test_the_environment_files_make_valid_settings(node, monkeypatch):
    values = {**_env_file(DEPLOYMENT / "env" / "common.env"), **_env_file(DEPLOYMENT / "env" / node)}
    for key in list(os.environ):
        if key.startswith("IM_"):
            monkeypatch.delenv(key)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.nats_replicas == 3 and len(settings.nats_servers()) == 3
    assert settings.db_url.startswith("postgresql+asyncpg://")
    settings.signing_key()


def _units() -> list[Path]:
    return sorted((DEPLOYMENT / "systemd").glob("*.service"))


@pytest.mark.parametrize("unit", _units(), ids=lambda path: path.name)
def test_the_systemd_units_run_real_commands(unit: Path):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(unit.read_text())
    assert {"Unit", "Service", "Install"} <= set(parser.sections())
    command = shlex.split(parser["Service"]["ExecStart"])
    program = Path(command[0]).name
    if program == "python":
        assert command[1:3] == ["-m", "im_server"]
        # The role is one the runner knows: its parser accepts it (and --help stops before any start).
        answer = subprocess.run(
            [sys.executable, "-m", "im_server", *command[3:], "--help"], capture_output=True, text=True, timeout=60
        )
        assert answer.returncode == 0, answer.stderr
    elif program == "nats-server":
        usage = subprocess.run([nats_server_binary(), "--help"], capture_output=True, text=True).stdout
        usage += subprocess.run([nats_server_binary(), "--help"], capture_output=True, text=True).stderr
        for flag in (argument for argument in command[1:] if argument.startswith("-")):
            assert re.search(rf"(^|[\s,]){re.escape(flag)}[\s,]", usage), flag
    else:
        raise AssertionError(f"{unit.name}: unexpected program {command[0]}")
    for environment_file in parser["Service"].get("EnvironmentFile", "").split():
        name = Path(environment_file).name
        assert name.startswith("%i") or (DEPLOYMENT / "env" / name).exists(), environment_file


def test_the_nats_configuration_is_accepted_by_nats_server(tmp_path: Path):
    config = tmp_path / "nats.conf"
    config.write_text((DEPLOYMENT / "nats" / "nats.conf").read_text())
    users = ClusterCredentials.load_or_create(tmp_path / "users", ["gw-1", "gw-2"])
    (tmp_path / "auth.conf").write_text(users.authorization("im"))
    answer = subprocess.run(
        [nats_server_binary(), "-c", str(config), "-t"],
        capture_output=True,
        text=True,
        env={**os.environ, "NATS_SERVER_NAME": "nats-1"},
        timeout=60,
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert "is valid" in answer.stdout + answer.stderr


def test_the_balancer_and_prometheus_point_at_the_nodes():
    compose = _compose()
    services = compose["services"]
    haproxy = (DEPLOYMENT / "haproxy" / "haproxy.cfg").read_text()
    backends = set(re.findall(r"^backend (\S+)", haproxy, re.M))
    used = set(re.findall(r"(?:use_backend|default_backend) (\S+)", haproxy))
    assert used and used <= backends
    api_port = _env_file(DEPLOYMENT / "env" / "api.env")["IM_API_PORT"]
    for gateway in ("gateway-1", "gateway-2"):
        env = _env_file(DEPLOYMENT / "env" / f"{gateway}.env")
        node = env["IM_NODE_ID"]
        assert f"server {node} {gateway}:{env['IM_GATEWAY_PORT']}" in haproxy
        assert env["IM_GATEWAY_PUBLIC_URL"].endswith(f"/gw/{node}/ws") and f"path_beg /gw/{node}/" in haproxy
    for api in ("api-1", "api-2"):
        assert f"server {api} {api}:{api_port}" in haproxy
    assert "hash-type consistent" in haproxy and "ssl crt" in haproxy
    prometheus = yaml.safe_load((DEPLOYMENT / "prometheus" / "prometheus.yml").read_text())
    metrics_port = _env_file(DEPLOYMENT / "env" / "common.env")["IM_METRICS_PORT"]
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert set(jobs) == {"im-api", "im-gateway"}  # the names docs/prometheus/alerts.yml uses
    for job in jobs.values():
        for target in job["static_configs"][0]["targets"]:
            host, port = target.split(":")
            assert host in services and port == metrics_port
    rules = [volume for volume in services["prometheus"]["volumes"] if "alerts.yml" in volume]
    assert rules and rules[0].split(":")[1] in prometheus["rule_files"]
    provider = yaml.safe_load((DEPLOYMENT / "grafana" / "provisioning" / "dashboards" / "im.yml").read_text())
    dashboards = provider["providers"][0]["options"]["path"]
    assert any(volume.split(":")[1].startswith(dashboards) for volume in services["grafana"]["volumes"])
