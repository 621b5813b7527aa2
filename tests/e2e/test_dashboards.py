"""The Grafana dashboard and the Prometheus alert rules in docs/ query only metrics the nodes export.

A real cluster (an API node and a gateway) is scraped; every expression of the dashboard (panel targets
and template variables) and of the alert rules is parsed as PromQL, and each metric it selects must be a
series some node exports (``_bucket``/``_sum``/``_count`` of a histogram included).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from tests.support.metrics import METRICS_TOKEN, gateway_base, scrape

DOCS = Path(__file__).resolve().parents[2] / "docs"
DASHBOARD = DOCS / "grafana" / "im-dashboard.json"
ALERTS = DOCS / "prometheus" / "alerts.yml"

PROMETHEUS_OWN = {"up"}
"""Series Prometheus makes itself for every target."""
_GRAFANA_VARIABLE = re.compile(r"\$(__rate_interval|__interval|__range)|\$\{?(\w+)\}?")
_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*\w+\)$")


def _as_promql(expr: str) -> str:
    """Grafana variables replaced by what Prometheus would receive: durations, or a regex."""
    return _GRAFANA_VARIABLE.sub(lambda match: "5m" if match.group(1) else ".*", expr)


def _selected(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr!r}"
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(_as_promql(expr)), visit)
    return names


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = []
    for panel in panels:
        found.append(panel)
        found += _panels(panel.get("panels", []))
    return found


def dashboard_expressions() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in _panels(board["panels"]) for target in panel.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            match = _LABEL_VALUES.match(variable["definition"])
            assert match, variable["definition"]
            exprs.append(match["selector"])
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_files_are_well_formed():
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and len(_panels(board["panels"])) >= 20
    for panel in _panels(board["panels"]):
        assert panel["type"] == "row" or panel["targets"], panel["title"]
    ids = [panel["id"] for panel in _panels(board["panels"])]
    assert len(ids) == len(set(ids))
    rules = alert_rules()
    assert len({rule["alert"] for rule in rules}) == len(rules) >= 10
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_every_expression_names_a_metric_the_nodes_export(make_cluster):
    cluster = make_cluster(gateways=1, metrics_token=METRICS_TOKEN)
    exported: set[str] = set()

    async def collect() -> None:
        for base in (cluster.url, gateway_base(cluster)):
            exported.update((await scrape(base)).series_names())

    cluster.loop.run(collect())
    assert {"im_send_seconds_bucket", "im_gateway_connections", "im_errors_total"} <= exported

    expressions = dashboard_expressions() + [rule["expr"] for rule in alert_rules()]
    missing = {name: expr for expr in expressions for name in _selected(expr) if name not in exported | PROMETHEUS_OWN}
    assert not missing, f"metrics no node exports: {missing}"


def test_the_check_catches_a_wrong_name():
    assert _selected('sum(rate(im_nope_total{instance=~"$instance"}[$__rate_interval]))') == {"im_nope_total"}
    assert _selected("histogram_quantile(0.99, sum by (le) (rate(im_send_seconds_bucket[5m]))) > 0.1") == {
        "im_send_seconds_bucket"
    }
