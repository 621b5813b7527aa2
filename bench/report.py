"""The outputs of a run: the JSON document, a markdown table, and a PNG of latency against offered load.

The chart needs matplotlib (``pip install -e '.[bench]'``); without it :func:`chart` returns a sentence
saying so and the run goes on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["chart", "markdown"]


def _ms(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1f} ms" if value >= 10 else f"{value:.2f} ms"


def _num(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    return f"{value:,.0f}{unit}" if abs(value) >= 100 else f"{value:.2f}{unit}"


def _rows(name: str, figures: dict[str, Any]) -> list[tuple[str, str]]:
    if "skipped" in figures:
        return [(name, f"skipped: {figures['skipped']}")]
    if "error" in figures:
        return [(name, f"failed: {figures['error'].splitlines()[-1]}")]
    integrity = f"lost {figures.get('lost', 'n/a')}, duplicated {figures.get('duplicated', 'n/a')}"
    if name == "W1":
        return [
            (
                f"W1: {figures['pairs']} pairs, {figures['offered_rate']:.0f} msgs/s, delivery p50 / p99",
                f"{_ms(figures['delivery_p50_ms'])} / {_ms(figures['delivery_p99_ms'])} ({integrity})",
            ),
            (
                "W1: server CPU per message / server CPU",
                f"{_ms(figures['server_cpu_ms_per_msg'])} / {_num(figures['server_cpu_percent'], ' %')}",
            ),
        ]
    if name == "W2":
        rows = [
            (
                f"W2: {figures['pairs']} pairs, highest step with {figures['criterion']}",
                f"{_num(figures['highest_passing_rate'], ' msgs/s')} ({integrity})",
            )
        ]
        for step in figures["steps"]:
            rows.append(
                (
                    f"W2 at {step['offered_rate']:.0f} msgs/s offered",
                    f"delivered {step['delivered_per_s']:.0f}/s, loss {step['loss']:.2%}, p50 "
                    f"{_ms(step['delivery_p50_ms'])}, p99 {_ms(step['delivery_p99_ms'])}, server CPU "
                    f"{_num(step['server_cpu_percent'], ' %')}, refused {step['errors']}, unanswered "
                    f"{step['unanswered']}, pushed late {step.get('late', 0)} (resyncs {step.get('resyncs', 0)}, "
                    f"closed {step.get('closed', 0)})",
                )
            )
        return rows
    if name == "W3":
        return [
            (
                f"W3: {figures['online']}-member group online, {figures['messages']} msgs: last member p50 / max",
                f"{_ms(figures['last_member_p50_ms'])} / {_ms(figures['last_member_max_ms'])} ({integrity})",
            )
        ]
    if name == "W4":
        per = figures.get("bytes_per_connection")
        return [
            (
                f"W4: {figures['connected']} idle connections: server memory per connection",
                "n/a" if per is None else f"{per / 1024:.1f} KiB",
            ),
            ("W4: connect rate (login + connect + auth)", _num(figures["connects_per_s"], "/s")),
            ("W4: idle server CPU", _num(figures.get("idle_cpu_percent"), " %")),
        ]
    if name == "W5":
        return [
            (f"W5: {run['messages']} messages waiting: login to last message", f"{run['seconds']:.3f} s ({integrity})")
            for run in figures["runs"]
        ]
    if name == "storm":
        resynced = figures["resynced_s"]
        return [
            (
                f"storm: gw-1 killed with {figures['on_killed_gateway']} of {figures['clients']} clients: all resynced",
                ("not within the timeout" if resynced is None else f"{resynced:.2f} s") + f" ({integrity})",
            )
        ]
    return [(name, str(figures))]


def markdown(result: dict[str, Any]) -> str:
    """One table row per figure, in the order of the issue's table."""
    meta = result["meta"]
    lines = [
        f"`{meta['command']}` at {meta['started_at']} on {meta['cpus']} cores, load average "
        f"{meta['loadavg_before'][0]:.2f} before, {meta['loadavg_after'][0]:.2f} after"
        + (", server pinned to core 0" if meta["pin"] else ""),
        "",
        "| workload | figure |",
        "| --- | --- |",
    ]
    order = ["W1", "W2", "W3", "W4", "W5", "storm"]
    workloads = result["workloads"]
    for name, figures in sorted(workloads.items(), key=lambda item: order.index(item[0]) if item[0] in order else 99):
        lines += [f"| {label} | {value} |" for label, value in _rows(name, figures)]
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> str:
    """Draw delivery latency percentiles against offered load (W1 and every W2 step); says what it did."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no chart: matplotlib is not installed (pip install -e '.[bench]')"
    steps: list[dict[str, Any]] = []
    for name in ("W1", "W2"):
        figures = result["workloads"].get(name, {})
        steps += [figures] if name == "W1" and "offered_rate" in figures else figures.get("steps", [])
    steps = sorted((s for s in steps if s.get("delivery_p50_ms") is not None), key=lambda s: s["offered_rate"])
    if not steps:
        return "no chart: neither W1 nor W2 ran"
    figure, axes = plt.subplots(figsize=(8, 5))
    rates = [step["offered_rate"] for step in steps]
    for key, label in (("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9")):
        axes.plot(rates, [step[f"delivery_{key}_ms"] for step in steps], marker="o", label=label)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("offered load (messages/s)")
    axes.set_ylabel("delivery latency (ms)")
    axes.set_title("Delivery latency against offered load")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return f"chart written to {path}"
