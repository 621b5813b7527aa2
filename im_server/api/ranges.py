"""HTTP byte ranges (RFC 9110, section 14) for downloads: parsing, with no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ByteRange", "Unsatisfiable", "content_disposition", "parse_range"]

_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ByteRange:
    """Bytes ``start`` to ``end`` inclusive, as ``Content-Range`` writes them."""

    start: int
    end: int

    @property
    def length(self) -> int:
        """How many bytes."""
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        """The ``Content-Range`` header value."""
        return f"bytes {self.start}-{self.end}/{size}"


class Unsatisfiable(ValueError):
    """The range starts at or beyond the end of the representation (answer 416)."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range a ``Range`` header asks for, or ``None`` to send everything.

    Headers this server ignores (as RFC 9110 allows) give ``None``: malformed ones, other units, and
    several ranges at once. ``bytes=10-`` runs to the end, ``bytes=-10`` is the last ten bytes, and an
    end past the last byte is cut to it.

    Raises:
        Unsatisfiable: the range lies entirely beyond the last byte (or asks for zero bytes).
    """
    if not header:
        return None
    match = _RANGE.match(header)
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # a suffix: the last N bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise Unsatisfiable(header)
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None  # invalid: ignored
    if start >= size:
        raise Unsatisfiable(header)
    return ByteRange(start, min(end, size - 1))


def content_disposition(disposition: str, name: str) -> str:
    """``attachment; filename="report.pdf"; filename*=UTF-8''report.pdf`` (RFC 6266), safe for any name."""
    from urllib.parse import quote

    fallback = "".join(char if 32 <= ord(char) < 127 and char not in '"\\' else "_" for char in name) or "file"
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
