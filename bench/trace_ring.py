"""What the trace ring of ``im cluster trace`` costs a node: memory when full, time per pushed frame.

    python bench/trace_ring.py [--capacity 10000] [--devices 16]

Memory is measured with ``tracemalloc`` for the worst case (every message of a full ring pushed to more
devices than are listed). Time is given as a ratio to decoding the delivery envelope the frame came in,
measured in the same run (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import timeit
import tracemalloc

from im_server.bus.codec import decode_delivery, encode_delivery
from im_server.cluster.trace import TraceRing, frame_key
from im_server.services.delivery import message_frame

__all__: list[str] = []

MESSAGE = (
    b'{"conversation":"g:123","seq":123456,"sender":42,"client_msg_id":"abcdefgh12",'
    b'"sent_at":"2026-12-01T12:00:00.000Z","content":{"kind":"text","text":"' + b"x" * 200 + b'"}}'
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--capacity", type=int, default=10_000)
    parser.add_argument("--devices", type=int, default=16)
    args = parser.parse_args()

    tracemalloc.start()
    ring = TraceRing(args.capacity, args.devices)
    for seq in range(args.capacity):
        # Fresh strings per message, as each decoded delivery envelope makes them.
        fresh = [(user, f"device-{user}") for user in range(args.devices * 2)]
        ring.pushed(("g:123", seq), fresh, len(fresh))
    recipients = [(user, f"device-{user}") for user in range(1000)]
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"full ring ({args.capacity} messages, {args.devices} devices listed each): {used / 2**20:.1f} MiB")

    frame = message_frame(MESSAGE)
    envelope = encode_delivery([(frame, recipients[:3])])
    count = 50_000
    decode = min(timeit.repeat(lambda: decode_delivery(envelope), number=count, repeat=3)) / count
    key = min(timeit.repeat(lambda: frame_key(frame), number=count, repeat=3)) / count
    ring = TraceRing(args.capacity, args.devices)
    seqs = iter(range(10**9))
    record = min(timeit.repeat(lambda: ring.pushed(("g:123", next(seqs)), recipients[:3], 3), number=count, repeat=3))
    record /= count
    group = min(timeit.repeat(lambda: ring.pushed(("g:123", next(seqs)), recipients, 1000), number=count, repeat=3))
    group /= count
    print(f"decode_delivery (3 recipients): {decode * 1e6:.2f} us")
    print(f"frame_key: {key * 1e6:.2f} us ({key / decode:.2f}x the decode)")
    print(f"ring.pushed (3 devices): {record * 1e6:.2f} us ({record / decode:.2f}x the decode)")
    print(f"ring.pushed (1000 devices): {group * 1e6:.2f} us ({group / decode:.2f}x the decode)")


if __name__ == "__main__":
    main()
