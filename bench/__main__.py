"""``python -m bench``: every figure of the performance targets in one command.

Starts a cluster (the embedded ``im server up``: nats-server with per-role credentials, one API, N
gateways) with the per-user limits lifted, or uses the one at ``--url``; drives real WebSocket clients
from ``--procs`` processes through W1-W5 and the reconnect storm; writes ``<out>/results.json``,
``<out>/results.md`` and ``<out>/latency.png``; prints the JSON on stdout and the table on stderr.

    python -m bench                                  # every workload at the sizes of the targets
    python -m bench --scale 0.1 --only W1,W2         # a tenth of the users and rates, two workloads
    python -m bench --pin --set w2_rates=500,2000,8000 --set w3_members=200
    python -m bench --url http://host:8080 --server-pid api=1234 --only W1,W4

Sizes (``--set name=value``, lists comma-separated): w1_pairs, w1_rate, w1_duration, w2_pairs, w2_rates,
w2_duration, w2_max_loss, w2_max_p99_ms, w2_keep_going, w3_members, w3_messages, w3_interval,
w4_connections, w4_idle, w5_messages, storm_clients, storm_timeout, drain.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from bench.report import chart, markdown
from bench.runner import Options, run
from bench.workloads import WORKLOADS, Sizes

__all__ = ["main"]


def _pid(text: str) -> tuple[str, int]:
    name, _, pid = text.partition("=")
    if not pid.isdigit():
        raise argparse.ArgumentTypeError("expected name=pid, e.g. api=1234")
    return name, int(pid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=",".join(WORKLOADS), help="workloads to run (default all: W1-W5,storm)")
    parser.add_argument("--scale", type=float, default=1.0, help="counts and rates times this (durations unchanged)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="one size (after --scale)")
    parser.add_argument("--url", help="a running cluster's API URL (default: start one)")
    parser.add_argument(
        "--server-pid",
        action="append",
        type=_pid,
        default=[],
        metavar="NAME=PID",
        help="with --url: a server process whose CPU and memory to read (repeat)",
    )
    parser.add_argument("--gateways", type=int, default=2, help="gateways of the started cluster")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--pin", action="store_true", help="server processes on core 0, clients on the others")
    parser.add_argument("--db", help="database URL for the started cluster (default SQLite in a temporary dir)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="directory for the outputs")
    args = parser.parse_args(argv)

    sizes = Sizes().scaled(args.scale)
    try:
        for assignment in args.set:
            sizes = sizes.set(assignment)
    except ValueError as exc:
        parser.error(str(exc))
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; one of {', '.join(WORKLOADS)}")
    options = Options(
        only=only,
        sizes=sizes,
        url=args.url,
        server_pids=dict(args.server_pid),
        gateways=args.gateways,
        procs=max(1, args.procs),
        pin=args.pin,
        db=args.db,
        command=shlex.join(["python", "-m", "bench", *(argv if argv is not None else sys.argv[1:])]),
        log=sys.stderr,
    )
    result = run(options)
    args.out.mkdir(parents=True, exist_ok=True)
    document = json.dumps(result, indent=2)
    (args.out / "results.json").write_text(document + "\n")
    table = markdown(result)
    (args.out / "results.md").write_text(table)
    print(document)
    print(table, file=sys.stderr)
    print(chart(result, args.out / "latency.png"), file=sys.stderr)
    failed = [name for name, figures in result["workloads"].items() if "error" in figures]
    for name in failed:
        print(f"{name} failed:\n{result['workloads'][name]['error']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
