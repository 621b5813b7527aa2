"""What a streaming message costs: a stream write against a plain send, and how many pushes viewers get.

    python bench/streaming.py [WRITES]

Starts a local cluster (``im_sdk.testing.LocalCluster``); a writer sends WRITES messages one after
another, then writes WRITES pieces into one stream one after another (each stored before the answer),
while a viewer connected to a gateway counts the stream notices it receives. Prints the median latency
of each operation, their ratio, and the notices per write (coalesced to one per push interval).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from im_sdk import StreamEvent
from im_sdk.testing import LocalCluster

SETTINGS = {
    "IM_SEND_RATE": "100000",
    "IM_SEND_BURST": "100000",
    "IM_STREAM_WRITE_RATE": "100000",
    "IM_STREAM_WRITE_BURST": "100000",
    "IM_DM_REQUIRES_FRIENDSHIP": "false",
    "IM_MAX_TEXT_LEN": "16000",
}


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


async def run(cluster: LocalCluster, writes: int) -> None:
    writer = await cluster.user("writer")
    viewer = await cluster.user("viewer")
    assert viewer.session is not None
    to = viewer.session.user.id
    notices = 0
    finished = asyncio.Event()
    first = asyncio.Event()

    async def watch() -> None:
        nonlocal notices
        async for event in viewer.events(start="all"):
            first.set()
            if isinstance(event, StreamEvent):
                notices += 1
                if event.done:
                    finished.set()

    watcher = asyncio.create_task(watch())
    await writer.send_text(to, "hello")
    await asyncio.wait_for(first.wait(), 30)

    sends = []
    for n in range(writes):
        started = time.perf_counter()
        await writer.send_text(to, f"m{n}")
        sends.append(time.perf_counter() - started)
    stream = await writer.open_stream(to, "x")
    appends = []
    offset = 1
    began = time.perf_counter()
    for _ in range(writes):
        started = time.perf_counter()
        await writer.append_stream(stream.conversation, stream.seq, offset, "word ")
        appends.append(time.perf_counter() - started)
        offset += 5
    elapsed = time.perf_counter() - began
    await writer.finish_stream(stream.conversation, stream.seq)
    await asyncio.wait_for(finished.wait(), 30)
    watcher.cancel()
    await writer.aclose()
    await viewer.aclose()
    print(
        f"send p50 {median(sends) * 1000:.1f} ms; stream write p50 {median(appends) * 1000:.1f} ms;"
        f" ratio {median(appends) / median(sends):.2f}"
    )
    print(
        f"{writes} writes in {elapsed:.2f} s ({writes / elapsed:.0f}/s) gave the viewer {notices} notices"
        f" ({notices / writes:.2f} per write; about {notices / elapsed:.1f}/s)"
    )


def main() -> None:
    writes = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    with tempfile.TemporaryDirectory() as directory:
        cluster = LocalCluster(Path(directory), settings=SETTINGS).start()
        try:
            asyncio.run(run(cluster, writes))
        finally:
            cluster.stop()


if __name__ == "__main__":
    main()
