"""The base install is the SDK alone: importing it must not pull in the server, the CLI or their deps.

Each check runs in a fresh interpreter that hides the forbidden packages, as on a machine with only
``pip install imkit``. Hiding matters because third-party code may use them when they happen to be installed
(httpx imports rich for its optional CLI), which says nothing about our own imports.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

FORBIDDEN = ("im_server", "im_cli", "sqlalchemy", "nats", "fastapi", "uvicorn", "typer", "rich")

PROBE = """
import importlib.abc, json, sys

forbidden = set(sys.argv[1].split(","))
attempts = []


class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] not in forbidden:
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__", "").startswith("importlib"):
            frame = frame.f_back
        attempts.append([name, None if frame is None else frame.f_globals.get("__name__")])
        raise ModuleNotFoundError(f"hidden: {name}", name=name)


sys.meta_path.insert(0, Hide())
error = None
try:
    for module in sys.argv[2:]:
        __import__(module)
except Exception as exc:
    error = repr(exc)
print(json.dumps({"error": error, "attempts": attempts, "modules": sorted(sys.modules)}))
"""


def probe(*modules):
    result = subprocess.run(
        [sys.executable, "-c", PROBE, ",".join(FORBIDDEN), *modules],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def is_ours(module):
    return module is not None and module.partition(".")[0] in ("im_schema", "im_sdk")


def forbidden_loaded(modules):
    return sorted(name for name in modules if name.partition(".")[0] in FORBIDDEN)


@pytest.mark.parametrize(
    "modules",
    [
        ("im_schema",),
        ("im_sdk",),
        ("im_sdk.realtime",),
        ("im_schema", "im_schema.rest", "im_schema.frames", "im_sdk", "im_sdk.realtime.protocol"),
    ],
)
def test_sdk_and_schema_import_without_server_or_cli_packages(modules):
    report = probe(*modules)
    assert report["error"] is None
    assert set(modules) <= set(report["modules"])
    assert [attempt for attempt in report["attempts"] if is_ours(attempt[1])] == []
    assert forbidden_loaded(report["modules"]) == []


def test_schema_needs_only_pydantic():
    report = probe("im_schema")
    assert report["error"] is None
    assert report["attempts"] == []
    assert [name for name in report["modules"] if name.partition(".")[0] in ("httpx", "websockets")] == []


def test_the_probe_catches_a_forbidden_import():
    report = probe("im_server.storage")
    assert report["error"] is not None
    assert any(name == "im_server" or name.startswith("sqlalchemy") for name, _ in report["attempts"])


def test_the_probe_names_the_importing_module():
    # httpx tries rich for its optional CLI; the attempt is attributed to httpx, not to us.
    report = probe("httpx")
    assert report["error"] is None
    assert ["rich", "httpx._main"] in report["attempts"]


HIDE_AND_RUN = """
import importlib.abc, sys

forbidden = {"typer", "rich", "im_server", "sqlalchemy", "nats", "fastapi", "uvicorn"}


class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in forbidden:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Hide())
from im_cli.main import main  # what the `im` console script does

main()
"""


def test_the_im_command_without_the_cli_extra_says_what_to_install():
    result = subprocess.run(
        [sys.executable, "-c", HIDE_AND_RUN], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "the im command needs the cli extra: pip install 'imkit[cli]'"
    assert "Traceback" not in result.stderr
