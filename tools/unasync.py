"""Generate the blocking client from the asynchronous source.

``im_sdk/_async_client.py``, ``im_sdk/_people.py`` and ``im_sdk/_devices.py`` are the only source of the
clients; ``im_sdk/_sync_client.py``, ``im_sdk/_sync_people.py`` and ``im_sdk/_sync_devices.py`` are
written by this script (as httpcore does with unasync and psycopg with its async-to-sync script)::

    python tools/unasync.py          # rewrite the blocking modules
    python tools/unasync.py --check  # exit 1 if a blocking module is not what the source gives

The rewrite works on tokens, so it never touches a word inside a name:

- ``async`` and ``await`` are dropped; ``(await x).y`` loses its parentheses;
- the names in :data:`NAMES` are renamed (``AsyncClient`` → ``Client``, ``__aenter__`` → ``__enter__``,
  ...), the modules in :data:`MODULES` too (``_async_io`` → ``_sync_io``, ...), and
  ``AsyncGenerator[T, None]`` becomes ``Generator[T, None, None]``;
- docstrings and comments get the renames of :data:`NAMES`, and lose ``await`` and ``async`` before ``with``,
  ``for`` and ``def``.

Everything else that differs (sleeping, locks, threads for file work, the WebSocket client) is imported
from :mod:`im_sdk._async_io`, whose blocking counterpart :mod:`im_sdk._sync_io` is written by hand.
The result goes through ``ruff check --fix`` (import order, unused imports, ``yield from``) and
``ruff format``. A test runs
``--check``, so a blocking module that was edited by hand, or not regenerated, fails the suite.
"""

from __future__ import annotations

import argparse
import io
import keyword
import re
import subprocess
import sys
import tokenize
from collections.abc import Callable
from pathlib import Path

__all__ = ["FILES", "MODULES", "NAMES", "generate", "main", "unasync"]

ROOT = Path(__file__).resolve().parent.parent

FILES = {
    "im_sdk/_async_client.py": "im_sdk/_sync_client.py",
    "im_sdk/_people.py": "im_sdk/_sync_people.py",
    "im_sdk/_devices.py": "im_sdk/_sync_devices.py",
    "im_sdk/_streams.py": "im_sdk/_sync_streams.py",
}
"""Source module → generated module, relative to the repository root."""

NAMES = {
    "AsyncClient": "Client",
    "AsyncFriends": "Friends",
    "AsyncGroups": "Groups",
    "AsyncDevices": "Devices",
    "AsyncMessageStream": "MessageStream",
    "AsyncBaseTransport": "BaseTransport",
    "AsyncIterator": "Iterator",
    "AsyncGenerator": "Generator",
    "StopAsyncIteration": "StopIteration",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "aclose": "close",
    "aclosing": "closing",
    "aread": "read",
    "aiter_bytes": "iter_bytes",
}
"""Identifiers renamed in code, docstrings and comments."""

MODULES = {
    "_async_io": "_sync_io",
    "_async_client": "_sync_client",
    "_people": "_sync_people",
    "_devices": "_sync_devices",
    "_streams": "_sync_streams",
}
"""Modules renamed in imports (only in code: a docstring that names a file keeps naming it)."""

HEADER = "# Generated from {source} by tools/unasync.py: edit the source and run the script, not this file.\n"

_WORDS = re.compile(r"\b(" + "|".join(sorted(map(re.escape, NAMES), key=len, reverse=True)) + r")\b")
_AWAIT = re.compile(r"\bawait\s+")
_ASYNC = re.compile(r"\basync\s+(?=with\b|for\b|def\b)")
_PROSE = [(re.compile(r"\b[Aa]n asynchronous\b"), "A blocking"), (re.compile(r"\basynchronous\b"), "blocking")]


def _text(value: str) -> str:
    """Renames in a docstring or a comment."""
    value = _AWAIT.sub("", value)
    value = _ASYNC.sub("", value)
    for pattern, replacement in _PROSE:
        value = pattern.sub(replacement, value)
    return _WORDS.sub(lambda match: NAMES[match.group(1)], value)


def unasync(source: str) -> str:
    """The blocking twin of an asynchronous module's source (before formatting)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(position: tuple[int, int]) -> int:
        return starts[position[0] - 1] + position[1]

    edits: list[tuple[int, int, str]] = []  # (start, end, replacement) in source offsets
    closing = _matching_brackets(tokens)
    for index, token in enumerate(tokens):
        start, end = offset(token.start), offset(token.end)
        if token.type == tokenize.NAME and token.string in ("async", "await"):
            following = tokens[index + 1]
            edits.append((start, offset(following.start), ""))
            if token.string == "await":
                _drop_parentheses(tokens, index, closing, offset, edits)
        elif token.type == tokenize.NAME and token.string in MODULES:
            edits.append((start, end, MODULES[token.string]))
        elif token.type == tokenize.NAME and token.string in NAMES:
            edits.append((start, end, NAMES[token.string]))
            if token.string == "AsyncGenerator" and tokens[index + 1].string == "[":
                # AsyncGenerator[Y, S] has no return type; Generator[Y, S, R] has one.
                bracket = closing[index + 1]
                edits.append((offset(tokens[bracket].start), offset(tokens[bracket].start), ", None"))
        elif token.type in (tokenize.STRING, tokenize.COMMENT):
            edits.append((start, end, _text(token.string)))
    result = source
    for start, end, replacement in sorted(edits, key=lambda edit: (edit[0], edit[1]), reverse=True):
        result = result[:start] + replacement + result[end:]
    return result


def _matching_brackets(tokens: list[tokenize.TokenInfo]) -> dict[int, int]:
    """Index of each opening bracket's closing bracket."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    for index, token in enumerate(tokens):
        if token.type != tokenize.OP:
            continue
        if token.string in "([{":
            stack.append(index)
        elif token.string in ")]}":
            pairs[stack.pop()] = index
    return pairs


def _drop_parentheses(
    tokens: list[tokenize.TokenInfo],
    index: int,
    closing: dict[int, int],
    offset: Callable[[tuple[int, int]], int],
    edits: list[tuple[int, int, str]],
) -> None:
    # "(await call()).attribute" becomes "call().attribute", not "(call()).attribute".
    opening = index - 1
    if opening < 0 or tokens[opening].string != "(":
        return
    before = tokens[opening - 1] if opening > 0 else None
    if before is not None and before.type == tokenize.NAME and not keyword.iskeyword(before.string):
        return  # a call: f(await x)
    if before is not None and before.string in (")", "]"):
        return  # a call of a call's result, or of an item
    end = closing.get(opening)
    if end is None or end + 1 >= len(tokens) or tokens[end + 1].string not in (".", "["):
        return
    edits.append((offset(tokens[opening].start), offset(tokens[opening].end), ""))
    edits.append((offset(tokens[end].start), offset(tokens[end].end), ""))


def _ruff(arguments: list[str], source: str, path: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *arguments, "--stdin-filename", path, "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode not in (0, 1) or not done.stdout:
        raise RuntimeError(f"ruff {' '.join(arguments)} failed on {path}: {done.stderr}")
    return done.stdout


def generate(source_path: str, target_path: str) -> str:
    """The formatted text of ``target_path`` as generated from ``source_path``."""
    source = (ROOT / source_path).read_text()
    text = HEADER.format(source=source_path) + unasync(source)
    # Import order, imports left unused, and "for x in it: yield x" that the blocking twin can say "yield from".
    fixes = ["check", "--fix", "--unsafe-fixes", "--select", "I,F401,UP028", "--quiet", "--exit-zero"]
    text = _ruff(fixes, text, target_path)
    return _ruff(["format", "--quiet"], text, target_path)


def main(argv: list[str] | None = None) -> int:
    """Write (or with ``--check``, compare) every generated module."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="report stale modules instead of writing them")
    arguments = parser.parse_args(argv)
    stale = []
    for source_path, target_path in FILES.items():
        text = generate(source_path, target_path)
        target = ROOT / target_path
        if target.exists() and target.read_text() == text:
            continue
        stale.append(target_path)
        if not arguments.check:
            target.write_text(text)
    for path in stale:
        print(f"{'stale' if arguments.check else 'rewrote'}: {path}")
    return 1 if arguments.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
