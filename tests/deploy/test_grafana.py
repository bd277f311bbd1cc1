"""Grafana: the dashboard, the provisioned data source, and the Grafana-managed
alert rules that mirror the Prometheus ones."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.cascade.config import DEFAULT_MAP_MOVES
from monitor.cascade.shocks import move_label
from tests.deploy.helpers import (
    DASHBOARD,
    GRAFANA_ALERTS,
    GRAFANA_DATASOURCE,
    alert_rules,
    all_panels,
    content_panels,
    dashboard_exprs,
    duration_s,
    grafana_rules,
    grafana_variables,
    load_yaml,
    metric_names,
    norm,
    require_tool,
    substitute_grafana_variables,
)

# The moves of the liquidation map, as the monitor labels them (the stack's
# config keeps the default grid).
MOVES = [move_label(m) for m in DEFAULT_MAP_MOVES]

DATASOURCE_VARIABLE = "${datasource}"


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def datasource_uid() -> str:
    return load_yaml(GRAFANA_DATASOURCE)["datasources"][0]["uid"]


def test_dashboard_identity(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "monitor-overview"
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert "id" not in dashboard or dashboard["id"] is None, "provisioned dashboards carry no id"


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in all_panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_panels_fit_the_grid_without_overlapping(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for p in all_panels(dashboard):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_every_panel_has_a_query_on_the_prometheus_datasource(dashboard: dict[str, Any]) -> None:
    allowed = {DATASOURCE_VARIABLE, datasource_uid()}
    for p in content_panels(dashboard):
        assert p.get("targets"), f"{p['title']}: no target"
        assert p["datasource"]["uid"] in allowed, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), f"{p['title']}: duplicate refIds"
        for t in p["targets"]:
            assert t.get("expr", "").strip(), f"{p['title']}: empty query"
            assert t["datasource"]["uid"] in allowed, p["title"]


def test_the_datasource_variable_defaults_to_the_provisioned_datasource(
    dashboard: dict[str, Any],
) -> None:
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus"
    assert ds["current"]["value"] == datasource_uid()


REQUIRED_PANELS = {
    "accounts by status": "monitor_accounts",
    "worst margin ratio": "monitor_worst_margin_ratio",
    "healthy notional at risk": "monitor_healthy_notional_at_risk",
    "liquidation map": "monitor_liquidation_map_notional",
    "cascade amplification": "monitor_cascade_amplification",
    "ingest rate": "monitor_messages_consumed_total",
    "consumer lag": "monitor_consumer_lag",
    "tick age": "monitor_tick_age_seconds_bucket",
    "rejections by reason": "monitor_messages_rejected_total",
    "alerts by kind": "monitor_alerts_total",
}


@pytest.mark.parametrize("title", sorted(REQUIRED_PANELS))
def test_required_panel_is_present_and_reads_its_metric(
    dashboard: dict[str, Any], title: str
) -> None:
    matches = [p for p in content_panels(dashboard) if p["title"].lower().startswith(title)]
    assert matches, f"no panel titled {title!r}"
    names = set().union(*(metric_names(t["expr"]) for p in matches for t in p["targets"]))
    assert REQUIRED_PANELS[title] in names


def test_liquidation_map_is_a_heatmap_per_underlying_over_the_move_grid(
    dashboard: dict[str, Any],
) -> None:
    heat = [p for p in content_panels(dashboard) if p["type"] == "heatmap"]
    assert len(heat) == 1
    panel = heat[0]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert panel["repeat"] == "underlying" and variables["underlying"]["multi"] is True
    assert "monitor_liquidation_map_notional" in variables["underlying"]["query"]["query"]
    assert panel["options"]["calculate"] is False, "rows are the move buckets, not computed"
    # One row per move, in grid order, each summed over instances.
    assert [t["legendFormat"] for t in panel["targets"]] == MOVES
    for t, move in zip(panel["targets"], MOVES, strict=True):
        assert f'move="{move}"' in t["expr"]
        assert 'underlying="$underlying"' in t["expr"]
        assert t["expr"].startswith("sum without(instance)")


def test_per_instance_book_figures_are_aggregated(dashboard: dict[str, Any]) -> None:
    summed = {
        "monitor_accounts",
        "monitor_healthy_notional_at_risk",
        "monitor_total_equity",
        "monitor_total_maintenance_margin",
        "monitor_liquidation_map_notional",
        "monitor_liquidation_map_accounts",
    }
    for expr in dashboard_exprs(dashboard):
        names = metric_names(expr)
        if names & summed:
            assert "sum without(instance)" in expr, expr
        if "monitor_worst_margin_ratio" in names:
            assert "max without(instance)" in expr, expr


def test_dashboard_queries_use_only_defined_variables(dashboard: dict[str, Any]) -> None:
    defined = {v["name"] for v in dashboard["templating"]["list"]}
    for expr in dashboard_exprs(dashboard):
        assert grafana_variables(expr) <= defined, expr


def promtool_check_exprs(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Let promtool parse expressions by posing them as recording rules."""
    rules = {
        "groups": [
            {
                "name": "parse",
                "rules": [
                    {"record": f"parse:expr_{i}", "expr": substitute_grafana_variables(e)}
                    for i, e in enumerate(exprs)
                ],
            }
        ]
    }
    path = tmp_path / "exprs.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    return subprocess.run(
        [require_tool("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_promtool_parses_every_dashboard_and_grafana_alert_query(
    dashboard: dict[str, Any], tmp_path: Path
) -> None:
    exprs = dashboard_exprs(dashboard) + [q["expr"] for _, q, _ in grafana_rules()]
    result = promtool_check_exprs(exprs, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parse_check_rejects_bad_promql(tmp_path: Path) -> None:
    assert promtool_check_exprs(["sum(monitor_ready"], tmp_path).returncode != 0


# --- Grafana-managed alert rules -------------------------------------------------------


def test_grafana_alerts_mirror_the_prometheus_alerts() -> None:
    prom = {r["alert"]: r for r in alert_rules()}
    graf = {rule["title"]: (rule, q, c) for rule, q, c in grafana_rules()}
    assert set(graf) == set(prom)
    ops = {"gt": ">", "lt": "<"}
    for name, (rule, query, cond) in graf.items():
        p = prom[name]
        (evaluator,) = [c["evaluator"] for c in cond["conditions"]]
        (value,) = evaluator["params"]
        rebuilt = f"{query['expr']} {ops[evaluator['type']]} {value:g}"
        assert norm(rebuilt) == norm(p["expr"]), name
        assert duration_s(rule["for"]) == duration_s(p["for"]), name
        assert rule["labels"] == {**p["labels"], "alert_source": "grafana"}, name
        assert rule["annotations"]["runbook_url"] == p["annotations"]["runbook_url"], name
        assert set(rule["annotations"]) == set(p["annotations"]), name


def test_grafana_alerts_query_the_provisioned_datasource_instantly() -> None:
    uid = datasource_uid()
    uids = set()
    for rule, query, _ in grafana_rules():
        assert query["datasourceUid"] == uid, rule["title"]
        assert query["instant"] is True, rule["title"]
        assert rule["noDataState"] == "OK" and rule["execErrState"] == "Error"
        uids.add(rule["uid"])
        assert re.fullmatch(r"[a-z0-9-]{1,40}", rule["uid"]), rule["uid"]
    assert len(uids) == len(grafana_rules())


def test_grafana_alert_templates_use_grafana_variables() -> None:
    for rule, _, _ in grafana_rules():
        for text in rule["annotations"].values():
            # Grafana's $value is a dump of every query; the number is $values.A.Value.
            assert not re.search(r"\$value\b", text), f"{rule['title']}: {text}"


def test_grafana_alert_intervals_are_valid() -> None:
    for group in load_yaml(GRAFANA_ALERTS)["groups"]:
        interval = duration_s(group["interval"])
        assert interval % 10 == 0, "Grafana evaluates on a 10 s base"
        for rule in group["rules"]:
            assert duration_s(rule["for"]) % interval == 0, rule["title"]


def test_grafana_alerts_notify_a_defined_contact_point() -> None:
    doc = load_yaml(GRAFANA_ALERTS)
    points = {c["name"] for c in doc["contactPoints"]}
    for policy in doc["policies"]:
        assert policy["receiver"] in points
