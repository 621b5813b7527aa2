"""Closed sets of values read tolerantly: a value a newer server adds does not fail the whole response.

A field the server writes and clients read (a member's role, an invitation's status, a stream's state) is
declared ``Annotated[Role | UnknownValue, Tolerant(Role)]``. It validates as the closed set when it can; any
other short string becomes an :class:`UnknownValue` instead of an error, so that a client built against this
version still reads the rest of the response and the value itself (as discord.py's ``try_enum`` does). The
JSON schema (and so the OpenAPI document) still lists the closed set: that is what this server writes. Fields
a client sends keep the plain closed set, so the server still refuses values it does not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

__all__ = ["MAX_UNKNOWN_LEN", "Tolerant", "UnknownValue"]

MAX_UNKNOWN_LEN = 64
"""The longest value kept as :class:`UnknownValue`; a longer one (or a non-string) is still an error."""


class UnknownValue(str):
    """A value this version does not know, from a newer server: the string as it was sent.

    It prints and compares as that string; ``isinstance(value, UnknownValue)`` tells it apart from the known
    values.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"UnknownValue({str.__repr__(self)})"


@dataclass(frozen=True, slots=True)
class Tolerant:
    """The annotation that reads ``known`` (a ``Literal`` or an enum) tolerantly: see the module docstring."""

    known: Any

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        strict = handler.generate_schema(self.known)

        def validate(value: Any, inner: core_schema.ValidatorFunctionWrapHandler) -> Any:
            try:
                return inner(value)
            except ValidationError:
                if isinstance(value, str) and 0 < len(value) <= MAX_UNKNOWN_LEN:
                    return UnknownValue(value)
                raise

        return core_schema.no_info_wrap_validator_function(
            validate, strict, serialization=core_schema.to_string_ser_schema(when_used="json-unless-none")
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The closed set, in both modes: it is what this version writes.
        return handler(schema["schema"]) if schema["type"] == "function-wrap" else handler(schema)
