"""A script that sends one message and shows the conversation, with the blocking client.

    IM_SERVER=http://127.0.0.1:8080 IM_USERNAME=ci IM_PASSWORD=secret \
        python examples/send_report.py bob "build 42 passed"
"""

from __future__ import annotations

import os
import sys

from im_sdk import Client, IMError


def main(to: str, text: str) -> int:
    with Client(os.environ.get("IM_SERVER", "http://127.0.0.1:8080")) as client:
        try:
            client.login(os.environ["IM_USERNAME"], os.environ["IM_PASSWORD"], device="report-script")
            message = client.send_text(to, text)
        except IMError as exc:
            print(f"not sent: {exc}", file=sys.stderr)
            return 1
        print(f"sent #{message.seq} to {message.conversation}")
        for earlier in client.history(message.conversation, limit=5).messages:
            print(f"  #{earlier.seq} from {earlier.sender}: {getattr(earlier.content, 'text', earlier.content.kind)}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: send_report.py TO TEXT")
    sys.exit(main(sys.argv[1], sys.argv[2]))
