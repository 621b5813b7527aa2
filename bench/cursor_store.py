"""What saving sync cursors costs a client (``AsyncClient(state_path=...)``), without a server.

Feeds a SyncEngine pushes in ``--conversations`` conversations through a CursorKeeper on a SQLite file
in a temporary directory (or ``--dir``), as the clients' events() loops do, and prints:

- the time of one save (median and 99th percentile) when one conversation changed, which is what
  light traffic costs per message (each burst ends with a save);
- the same with ``--burst`` messages per burst, spread over the conversations;
- the bookkeeping per message yielded, saves excluded.

    python bench/cursor_store.py --conversations 1000 --messages 20000
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from im_schema.models import Message
from im_sdk.realtime.protocol import Deliver, SyncEngine
from im_sdk.realtime.store import CursorKeeper

T0 = datetime(2024, 5, 1, tzinfo=UTC)


def _message(conversation: str, seq: int) -> Message:
    return Message(conversation=conversation, seq=seq, sender=2, sent_at=T0, content={"kind": "text", "text": "hello"})


def _run(directory: Path, conversations: int, messages: int, burst: int) -> tuple[list[float], float, int]:
    keeper = CursorKeeper(directory / f"state-{burst}.sqlite3", "http://bench")
    engine = SyncEngine(start="all", watermarks={f"g:{i + 1}": 0 for i in range(conversations)})
    keeper.ready(engine, 1, "bench")
    seqs = dict.fromkeys(range(conversations), 0)
    batches = []
    for index in range(messages):
        number = (index * 7919) % conversations
        seqs[number] += 1
        batches.append(_message(f"g:{number + 1}", seqs[number]))
    saves: list[float] = []
    started = time.perf_counter()
    save_time = 0.0
    for first in range(0, messages, burst):
        out = []
        for message in batches[first : first + burst]:
            out.extend(action.message for action in engine.on_push(message) if isinstance(action, Deliver))
        keeper.handed(out)
        for message in out:
            before = keeper.saves
            t0 = time.perf_counter()
            with keeper.yielding(message):
                pass
            if keeper.saves != before:
                elapsed = time.perf_counter() - t0
                saves.append(elapsed)
                save_time += elapsed
    total = time.perf_counter() - started
    keeper.close()
    bookkeeping = (total - save_time) / messages
    return saves, bookkeeping, keeper.saves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--dir", type=Path, default=None, help="where the SQLite files go (a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        for burst in (1, args.burst):
            saves, bookkeeping, count = _run(Path(directory), args.conversations, args.messages, burst)
            ordered = sorted(saves)
            p99 = ordered[int(len(ordered) * 0.99)] if ordered else 0.0
            print(
                f"{args.conversations} conversations, bursts of {burst}: {count} saves for {args.messages} messages,"
                f" save median {statistics.median(saves) * 1e6:.0f} us, p99 {p99 * 1e6:.0f} us;"
                f" bookkeeping {bookkeeping * 1e6:.1f} us per message"
            )


if __name__ == "__main__":
    main()
