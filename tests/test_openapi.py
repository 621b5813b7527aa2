"""The REST contract: one declaration per endpoint, and a snapshot of the OpenAPI document.

Each endpoint is declared once, by its request model in ``im_schema`` (method, path, answer, success
status); the routes are derived from the models, and these tests fail if any route and model disagree.
``tests/openapi.json`` is the document the API serves; a change to it must be deliberate. Regenerate it
after changing the contract with::

    .venv/bin/python -m tests.test_openapi

and review the diff.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from fastapi import FastAPI

import im_schema
from im_schema.files import download_path
from im_schema.models import Message
from im_schema.rest import Request
from im_server.api.app import create_app
from im_server.api.contract import ERROR_STATUSES
from im_server.api.node import ApiNode
from im_server.settings import Settings
from tools import restdoc

SNAPSHOT = Path(__file__).with_name("openapi.json")


def build_app() -> FastAPI:
    """The API's application, without starting a node (nothing is connected or written)."""
    directory = tempfile.mkdtemp(prefix="im-openapi-")
    settings = Settings(secret_key="openapi-snapshot-" + "k" * 32, db_url=f"sqlite+aiosqlite:///{directory}/im.db")
    return create_app(ApiNode(settings))


def document() -> dict[str, Any]:
    """The OpenAPI document, as JSON would carry it."""
    result: dict[str, Any] = json.loads(json.dumps(build_app().openapi()))
    return result


def render(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def request_models() -> list[type[Request[Any]]]:
    """Every request model of the schema that names an endpoint."""
    found: dict[str, type[Request[Any]]] = {}
    for info in pkgutil.walk_packages(im_schema.__path__, "im_schema."):
        module = importlib.import_module(info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, Request) and value is not Request and "endpoint" in value.__dict__:
                found[value.__qualname__] = value
    return sorted(found.values(), key=lambda model: model.__name__)


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return document()


def test_the_rest_reference_is_generated_from_the_snapshot() -> None:
    """docs/rest.md is ``python -m tools.restdoc``'s rendering of tests/openapi.json, every path in it."""
    snapshot = json.loads(SNAPSHOT.read_text())
    text = restdoc.TARGET.read_text()
    assert text == restdoc.render(snapshot), "docs/rest.md is not current: run '.venv/bin/python -m tools.restdoc'"
    for path, item in snapshot["paths"].items():
        for method in item:
            assert f"### `{method.upper()} {path}`" in text


def test_the_snapshot_is_current(openapi: dict[str, Any]) -> None:
    assert SNAPSHOT.exists(), "run: .venv/bin/python -m tests.test_openapi"
    expected = SNAPSHOT.read_text()
    assert render(openapi) == expected, (
        "the OpenAPI document changed: if that is deliberate, regenerate tests/openapi.json with "
        "'.venv/bin/python -m tests.test_openapi' and review the diff"
    )


def test_every_request_model_has_its_route(openapi: dict[str, Any]) -> None:
    models = request_models()
    assert len(models) >= 50
    for model in models:
        endpoint = model.endpoint
        operation = openapi["paths"].get(endpoint.path, {}).get(endpoint.method.lower())
        assert operation is not None, f"{model.__name__}: no route for {endpoint.method} {endpoint.path}"
        assert operation["operationId"] == model.__name__.removesuffix("Request")
        answer = operation["responses"][str(endpoint.status)]["content"]["application/json"]["schema"]
        assert answer["$ref"].rsplit("/", 1)[1] == endpoint.response.__name__, model.__name__
        parameters = {parameter["name"] for parameter in operation.get("parameters", []) if parameter["in"] == "path"}
        assert parameters == set(endpoint.path_params), model.__name__


def test_every_route_is_declared_by_a_request_model(openapi: dict[str, Any]) -> None:
    declared = {(model.endpoint.method, model.endpoint.path) for model in request_models()}
    # Downloads answer bytes, not a model: DownloadRequest names their path.
    special = {("GET", download_path("{blob}")), ("HEAD", download_path("{blob}"))}
    served = {
        (method.upper(), path)
        for path, operations in openapi["paths"].items()
        if path.startswith("/v1/")
        for method in operations
    }
    assert served - special == declared
    assert special <= served


def test_every_body_and_parameter_is_typed(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                assert schema != {"type": "string", "title": schema.get("title")}, f"{where}: untyped {parameter}"
            body = operation.get("requestBody")
            if body is None:
                continue
            content = body["content"]
            if "application/octet-stream" in content:
                assert content["application/octet-stream"]["schema"]["format"] == "binary"
                continue
            ref = content["application/json"]["schema"]["$ref"]
            schema = schemas[ref.rsplit("/", 1)[1]]
            assert schema["type"] == "object" and schema["additionalProperties"] is False, where
            assert schema["properties"], where


def test_every_error_status_carries_the_envelope(openapi: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in openapi["components"]["schemas"]
    for path, operations in openapi["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            responses = operation["responses"]
            if "422" in responses:  # only corrupt media, never a malformed request
                assert responses["422"] == {"$ref": "#/components/responses/CorruptMedia"}, f"{method} {path}"
            for status in ERROR_STATUSES:
                named = responses[str(status)]["$ref"].rsplit("/", 1)[1]
                envelope = openapi["components"]["responses"][named]
                ref = envelope["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/ErrorEnvelope"), f"{method} {path} {status}"
            if path not in {"/v1/auth/register", "/v1/auth/login", "/v1/auth/refresh", "/v1/auth/bot"}:
                assert operation["security"] == [{"bearer": []}], f"{method} {path}"
    assert openapi["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_the_upload_body_is_described(openapi: dict[str, Any]) -> None:
    upload = openapi["paths"]["/v1/files"]["post"]
    assert {"415", "422"} <= set(upload["responses"])
    assert upload["requestBody"]["content"]["application/octet-stream"]["schema"] == {
        "type": "string",
        "format": "binary",
    }
    assert {parameter["name"] for parameter in upload["parameters"]} == {"kind", "name"}


def test_no_content_matches_two_branches_of_the_union() -> None:
    schema = Message.model_json_schema(mode="serialization")
    union = schema["properties"]["content"]
    assert union["discriminator"]["propertyName"] == "kind"
    assert set(union["discriminator"]["mapping"]) == {"text", "system", "recalled", "image", "file", "voice", "video"}
    branches = [
        jsonschema_rs.validator_for({"$defs": schema["$defs"], **branch}, validate_formats=True)
        for branch in union["oneOf"]
    ]
    blob = "ab" * 32
    preview = {"blob": blob, "media_type": "image/png", "width": 1, "height": 1, "size": 10}
    samples = [
        {"kind": "text", "text": "hi"},
        {"kind": "system", "event": "member_joined", "data": {}},
        {"kind": "recalled", "by": 3},
        {
            "kind": "image",
            "blob": blob,
            "name": "a.png",
            "size": 9,
            "media_type": "image/png",
            "width": 1,
            "height": 1,
            "thumbnail": preview,
        },
        {"kind": "file", "blob": blob, "name": "a", "size": 1, "media_type": "text/plain"},
        {"kind": "voice", "blob": blob, "name": "a", "size": 1, "media_type": "audio/ogg", "duration_ms": 5},
        {"kind": "video", "blob": blob, "name": "a", "size": 1, "media_type": "video/mp4", "duration_ms": 5},
        {"kind": "sticker", "pack": "cats"},
    ]
    for sample in samples:
        matches = [index for index, branch in enumerate(branches) if branch.is_valid(sample)]
        assert len(matches) == 1, (sample, matches)


if __name__ == "__main__":
    SNAPSHOT.write_text(render(document()))
    sys.stdout.write(f"wrote {SNAPSHOT}\n")
    restdoc.main([])
    sys.stdout.write(f"wrote {restdoc.TARGET}\n")
