"""Tagged unions read back: the tags a union declares, so that no list of kinds is kept beside it."""

from __future__ import annotations

from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import Tag

__all__ = ["UNKNOWN", "tags_of"]

UNKNOWN = "unknown"
"""The tag of the branch that keeps whatever this version does not know."""


def tags_of(union: Any) -> tuple[str, ...]:
    """The tags of ``Annotated[A | B | ..., Discriminator(...)]`` whose branches are ``Annotated[X, Tag(t)]``,
    in declaration order, without :data:`UNKNOWN`."""
    members = get_args(union)[0] if get_origin(union) is Annotated else union
    tags: list[str] = []
    for member in get_args(members) if get_origin(members) is Union else (members,):
        tag = next((meta.tag for meta in getattr(member, "__metadata__", ()) if isinstance(meta, Tag)), None)
        if tag is None:
            raise TypeError(f"{member!r} has no Tag")
        if tag != UNKNOWN:
            tags.append(tag)
    return tuple(tags)
