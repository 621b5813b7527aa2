"""Upload and download throughput of files through the API into the blob store.

Starts ``im server up`` (its nats-server syncs every JetStream write to disk; unless ``--url`` names a
running cluster), registers two users, and has the first upload ``--count`` files of ``--size`` MiB of
random bytes (each distinct, so nothing is deduplicated) with ``--parallel`` uploads at a time, then the
second download them. Prints MB/s for each direction and the time to the first byte of a ranged read.

    python bench/upload.py --size 32 --count 8 --parallel 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(__file__))
from _common import cluster

from im_schema.social import SendFriendRequest
from im_sdk import AsyncClient

PASSWORD = "bench-password"


async def run(url: str, size_mib: int, count: int, parallel: int) -> None:
    async with AsyncClient(url, timeout=120) as alice, AsyncClient(url, timeout=120) as bob:
        names = [f"bench{secrets.token_hex(4)}" for _ in range(2)]
        for client, name in zip((alice, bob), names, strict=True):
            await client.register(name, PASSWORD)
            await client.login(name, PASSWORD, device="bench")
        # Direct messages need friendship by default: a request each way.
        await alice.request(SendFriendRequest(to=bob.session.user.id))
        await bob.request(SendFriendRequest(to=alice.session.user.id))
        with tempfile.TemporaryDirectory(prefix="im-bench-files-") as directory:
            folder = Path(directory)
            paths = []
            for index in range(count):
                path = folder / f"file{index}.bin"
                with path.open("wb") as out:
                    for _ in range(size_mib):
                        out.write(os.urandom(1024 * 1024))
                paths.append(path)
            total = size_mib * count * 1024 * 1024
            gate = asyncio.Semaphore(parallel)
            per_file: list[float] = []

            async def send(path: Path):
                async with gate:
                    started = time.perf_counter()
                    message = await alice.send_file(names[1], path)
                    per_file.append(time.perf_counter() - started)
                    return message

            started = time.perf_counter()
            messages = await asyncio.gather(*(send(path) for path in paths))
            upload_seconds = time.perf_counter() - started

            async def fetch(message, index: int) -> None:
                async with gate:
                    await bob.download(message, folder / f"copy{index}.bin")

            started = time.perf_counter()
            await asyncio.gather(*(fetch(message, index) for index, message in enumerate(messages)))
            download_seconds = time.perf_counter() - started

            # Seeking: the first byte of a range near the end of a file.
            blob = messages[0].content.blob
            headers = {"Authorization": f"Bearer {bob.session.access_token}", "Range": f"bytes={total // count - 10}-"}
            first_bytes = []
            for _ in range(10):
                began = time.perf_counter()
                async with bob._http.stream("GET", f"/v1/files/{blob}", headers=headers) as response:
                    async for _chunk in response.aiter_bytes():
                        first_bytes.append(time.perf_counter() - began)
                        break
    mb = total / 1e6
    print(f"{count} files of {size_mib} MiB, {parallel} at a time ({mb:.0f} MB in all)")
    median = statistics.median(per_file)
    print(f"upload:   {mb / upload_seconds:7.1f} MB/s  (median {median:.2f} s per file, until stored)")
    print(f"download: {mb / download_seconds:7.1f} MB/s  (SHA-256 checked by the client)")
    print(f"ranged read near the end: first byte after {statistics.median(first_bytes) * 1000:.1f} ms (median of 10)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running cluster's API (default: start one)")
    parser.add_argument("--size", type=int, default=32, help="MiB per file")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    if args.url:
        asyncio.run(run(args.url, args.size, args.count, args.parallel))
        return
    extra = {"IM_MAX_FILE_BYTES": str((args.size + 1) * 1024 * 1024)}
    with cluster(1, extra_env=extra) as url:
        asyncio.run(run(url, args.size, args.count, args.parallel))


if __name__ == "__main__":
    main()
