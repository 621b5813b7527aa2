"""The batcher behind grouped logins: items that wait together run together, each keeps its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from im_server.services.batching import Batcher


class Recorder:
    """A run function that holds each run until released, and records the batches it got."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, items: list[int]) -> list[int | BaseException]:
        self.batches.append(items)
        self.started.set()
        await self.release.wait()
        return [ValueError(f"odd {item}") if item % 2 else item * 10 for item in items]


async def test_a_lone_item_runs_at_once_and_later_ones_wait_for_the_next_run():
    run = Recorder()
    batcher = Batcher(run, max_size=3)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.wait_for(run.started.wait(), 5)
    assert run.batches == [[0]]
    later = [asyncio.create_task(batcher.submit(item)) for item in (2, 4, 6, 8)]
    await asyncio.sleep(0)
    assert run.batches == [[0]]  # the first run still holds the line
    run.release.set()
    assert await first == 0
    assert await asyncio.gather(*later) == [20, 40, 60, 80]
    assert run.batches == [[0], [2, 4, 6], [8]]  # at most max_size per run, in arrival order
    assert batcher.runs == 3


async def test_each_item_gets_its_own_result_or_exception():
    run = Recorder()
    run.release.set()
    batcher = Batcher(run)
    results = await asyncio.gather(*(batcher.submit(item) for item in range(4)), return_exceptions=True)
    assert results[0] == 0 and results[2] == 20
    assert [str(result) for result in results[1::2]] == ["odd 1", "odd 3"]


async def test_a_failed_run_fails_its_items_and_the_next_run_goes_on():
    calls: list[list[str]] = []

    async def run(items: list[str]) -> list[str | BaseException]:
        calls.append(items)
        if "bad" in items:
            raise ConnectionError("database away")
        return [item.upper() for item in items]

    batcher = Batcher(run)
    results = await asyncio.gather(batcher.submit("bad"), batcher.submit("x"), return_exceptions=True)
    assert all(isinstance(result, ConnectionError) for result in results)
    assert await batcher.submit("y") == "Y"


async def test_a_run_giving_the_wrong_number_of_results_fails_loudly():
    async def run(items: list[int]) -> list[int | BaseException]:
        return []

    with pytest.raises(RuntimeError, match="gave 0 results"):
        await Batcher(run).submit(1)


def test_max_size_must_allow_an_item():
    async def run(items: list[int]) -> list[int | BaseException]:
        return items

    with pytest.raises(ValueError, match="max_size"):
        Batcher(run, max_size=0)
