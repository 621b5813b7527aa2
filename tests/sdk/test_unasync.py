"""The blocking client is generated from the asynchronous source: regenerating it changes nothing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location("unasync_tool", ROOT / "tools" / "unasync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


unasync_tool = _load()


@pytest.mark.parametrize(("source", "target"), sorted(unasync_tool.FILES.items()))
def test_generated_modules_are_current(source, target):
    expected = unasync_tool.generate(source, target)
    assert (ROOT / target).read_text() == expected, f"{target} is stale: run `python tools/unasync.py`"


def test_check_mode_reports_nothing_stale():
    assert unasync_tool.main(["--check"]) == 0


def test_keywords_and_names():
    source = (
        "async def f(self) -> AsyncGenerator[int, None]:\n"
        "    async with aclosing(g()) as it:\n"
        "        async for x in it:\n"
        "            yield (await self._client.request(x)).value\n"
        "    await h(await k())\n"
        "    await self.aclose()\n"
    )
    assert unasync_tool.unasync(source) == (
        "def f(self) -> Generator[int, None, None]:\n"
        "    with closing(g()) as it:\n"
        "        for x in it:\n"
        "            yield self._client.request(x).value\n"
        "    h(k())\n"
        "    self.close()\n"
    )


def test_names_inside_other_names_and_strings_are_kept():
    source = (
        "AsyncClientX = 1\n"
        "my_aclose = 2\n"
        '"""An asynchronous client: ``async with AsyncClient(url)``, then ``await client.login()``."""\n'
        "from ._people import AsyncFriends  # see _people.py and AsyncFriends\n"
    )
    assert unasync_tool.unasync(source) == (
        "AsyncClientX = 1\n"
        "my_aclose = 2\n"
        '"""A blocking client: ``with Client(url)``, then ``client.login()``."""\n'
        "from ._sync_people import Friends  # see _people.py and Friends\n"
    )


def test_parentheses_of_a_call_stay():
    assert unasync_tool.unasync("x = f(await g()).y\n") == "x = f(g()).y\n"
    assert unasync_tool.unasync("x = (await g()) + 1\n") == "x = (g()) + 1\n"
