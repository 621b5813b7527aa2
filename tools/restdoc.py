"""Generate docs/rest.md, the REST reference, from the OpenAPI snapshot (tests/openapi.json).

The snapshot is the document the API serves (``python -m tests.test_openapi`` regenerates it after a
contract change); this turns it into one page: endpoints grouped by tag, each with its method and path,
summary, description, authentication, parameters, request body and answers, then the schemas.

    python -m tools.restdoc            # rewrite docs/rest.md
    python -m tools.restdoc --check    # exit 1 if docs/rest.md is not current (a test runs this)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "render"]

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "openapi.json"
TARGET = ROOT / "docs" / "rest.md"
METHODS = ("get", "head", "post", "put", "patch", "delete")


def _ref_name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _type(schema: dict[str, Any]) -> str:
    """A short type expression of a JSON schema, with links to named schemas."""
    if "$ref" in schema:
        name = _ref_name(schema["$ref"])
        return f"[`{name}`](#{name.lower()})"
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " \\| ".join(_type(item) for item in schema[key])
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _type(schema["allOf"][0])
    if "const" in schema:
        return f"`{json.dumps(schema['const'])}`"
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(value)}`" for value in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
        return f"object of {_type(schema['additionalProperties'])}"
    if isinstance(kind, str):
        fmt = schema.get("format")
        return f"{kind} ({fmt})" if fmt else kind
    return "any"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _limits(schema: dict[str, Any]) -> str:
    parts = []
    for key, label in (
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("exclusiveMinimum", ">"),
        ("exclusiveMaximum", "<"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
        ("pattern", "pattern"),
    ):
        if key in schema:
            value = f"`{schema[key]}`" if key == "pattern" else schema[key]
            parts.append(f"{label} {value}")
    return ", ".join(parts)


def _operation(method: str, path: str, op: dict[str, Any]) -> list[str]:
    lines = [f"### `{method.upper()} {path}`", ""]
    if op.get("summary"):
        lines += [f"**{op['summary'].strip()}**", ""]
    if op.get("description"):
        lines += [op["description"].strip(), ""]
    lines.append(f"Operation id: `{op.get('operationId', '')}`.")
    secured = bool(op.get("security"))
    lines += [f"Authentication: {'bearer access token' if secured else 'none'}.", ""]
    parameters = op.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | type | required | description |", "| --- | --- | --- | --- | --- |"]
        for parameter in parameters:
            schema = parameter.get("schema", {})
            description = parameter.get("description") or schema.get("description") or ""
            limits = _limits(schema)
            if limits:
                description = f"{description} ({limits})" if description else limits
            lines.append(
                f"| `{parameter['name']}` | {parameter['in']} | {_type(schema)} | "
                f"{'yes' if parameter.get('required') else 'no'} | {_cell(description)} |"
            )
        lines.append("")
    body = op.get("requestBody")
    if body:
        for media, content in sorted(body.get("content", {}).items()):
            lines += [f"Request body (`{media}`): {_type(content.get('schema', {}))}.", ""]
    responses = op.get("responses", {})
    answers = {status: response for status, response in responses.items() if "$ref" not in response}
    errors = {status: _ref_name(response["$ref"]) for status, response in responses.items() if "$ref" in response}
    if answers:
        lines += ["| status | meaning | body |", "| --- | --- | --- |"]
        for status, response in sorted(answers.items()):
            content = response.get("content", {})
            bodies = [_type(item.get("schema", {})) for _, item in sorted(content.items())]
            lines.append(f"| {status} | {_cell(response.get('description', ''))} | {', '.join(bodies) or '—'} |")
        lines.append("")
    if errors:
        listed = ", ".join(f"{status} [{name}](#{name.lower()})" for status, name in sorted(errors.items()))
        lines += [f"Errors: {listed}.", ""]
    return lines


def _error_responses(responses: dict[str, Any]) -> list[str]:
    lines = ["## Error answers", ""]
    for name, response in sorted(responses.items()):
        content = response.get("content", {})
        bodies = [_type(item.get("schema", {})) for _, item in sorted(content.items())]
        lines += [f"### {name}", "", _cell(response.get("description", "")), ""]
        if bodies:
            lines += [f"Body: {', '.join(bodies)}.", ""]
    return lines


def _schema(name: str, schema: dict[str, Any]) -> list[str]:
    lines = [f"### {name}", ""]
    if schema.get("description"):
        lines += [schema["description"].strip(), ""]
    properties = schema.get("properties", {})
    if properties:
        required = set(schema.get("required", []))
        lines += ["| field | type | required | description |", "| --- | --- | --- | --- |"]
        for field, prop in properties.items():
            description = prop.get("description", "")
            limits = _limits(prop)
            if limits:
                description = f"{description} ({limits})" if description else limits
            if "default" in prop and field not in required:
                description = f"{description} Default: `{json.dumps(prop['default'])}`.".strip()
            lines.append(
                f"| `{field}` | {_type(prop)} | {'yes' if field in required else 'no'} | {_cell(description)} |"
            )
        lines.append("")
    elif "properties" not in schema:
        lines += [f"Type: {_type(schema)}.", ""]
    return lines


def render(document: dict[str, Any]) -> str:
    """The Markdown reference of an OpenAPI document."""
    info = document.get("info", {})
    lines = [
        f"# REST reference: {info.get('title', 'API')} {info.get('version', '')}".rstrip(),
        "",
        "<!-- Generated by `python -m tools.restdoc` from tests/openapi.json; do not edit by hand. -->",
        "",
        'Every error answers `{"error": {"code": ..., "message": ...}}` (see docs/protocol.md). Requests',
        "marked with a bearer access token send `Authorization: Bearer <token>`.",
        "",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                op = item[method]
                tag = (op.get("tags") or ["other"])[0]
                by_tag.setdefault(tag, []).append((path, method, op))
    lines += ["## Contents", ""]
    for tag in sorted(by_tag):
        lines.append(f"- [{tag}](#{tag.lower().replace(' ', '-')}) ({len(by_tag[tag])})")
    lines += ["- [Error answers](#error-answers)", "- [Schemas](#schemas)", ""]
    for tag in sorted(by_tag):
        lines += [f"## {tag}", ""]
        for path, method, op in sorted(by_tag[tag], key=lambda entry: (entry[0], METHODS.index(entry[1]))):
            lines += _operation(method, path, op)
    lines += _error_responses(document.get("components", {}).get("responses", {}))
    lines += ["## Schemas", ""]
    for name, schema in sorted(document.get("components", {}).get("schemas", {}).items()):
        lines += _schema(name, schema)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/rest.md is not current")
    args = parser.parse_args(argv)
    text = render(json.loads(SNAPSHOT.read_text(encoding="utf-8")))
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current != text:
            print("docs/rest.md is not current: run python -m tools.restdoc", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
