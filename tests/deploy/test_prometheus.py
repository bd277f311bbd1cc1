"""Prometheus config, alerting rules, their promtool unit tests, and Alertmanager."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.helpers import (
    ALERTMANAGER,
    PROM_CONFIG,
    PROM_DIR,
    RULE_TESTS,
    RULES,
    alert_rules,
    duration_s,
    grouping_labels,
    load_yaml,
    metric_names,
    readme_anchors,
    recording_rules,
    require_tool,
)

SEVERITIES = {"page", "ticket"}


def promtool(*args: str, cwd: Path = PROM_DIR) -> subprocess.CompletedProcess[str]:
    exe = require_tool("promtool")
    return subprocess.run(
        [exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_accepts_the_prometheus_config_and_finds_the_rule_file() -> None:
    result = promtool("check", "config", PROM_CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout, result.stdout


def test_promtool_accepts_the_rules() -> None:
    result = promtool("check", "rules", str(RULES.relative_to(PROM_DIR)))
    assert result.returncode == 0, result.stdout + result.stderr
    count = len(alert_rules()) + len(recording_rules())
    assert f"SUCCESS: {count} rules found" in result.stdout, result.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    result = promtool("test", "rules", str(RULE_TESTS.relative_to(PROM_DIR)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("original", "mutant"),
    [
        # Summing per instance is what makes 2 x 600k exceed the 1M threshold.
        (
            "sum without(instance) (monitor_healthy_notional_at_risk) > 1e+06",
            "max without(instance) (monitor_healthy_notional_at_risk) > 1e+06",
        ),
        (
            "max without(instance) (monitor_cascade_amplification) > 2",
            "avg(monitor_cascade_amplification) > 2",
        ),
        # Every instance simulates the whole market: a sum would count it twice.
        (
            "max without(instance) (monitor_cascade_liquidated_notional) > 5e+07",
            "sum without(instance) (monitor_cascade_liquidated_notional) > 5e+07",
        ),
        ("monitor_snapshot_age_seconds > 600", "monitor_snapshot_age_seconds > 6000"),
        ('up{job="monitor"} < 1', 'up{job="monitor"} < 0'),
    ],
    ids=[
        "contagion-sum",
        "cascade-max",
        "cascade-notional-max",
        "snapshot-threshold",
        "down-threshold",
    ],
)
def test_the_rule_unit_tests_catch_a_broken_rule(
    tmp_path: Path, original: str, mutant: str
) -> None:
    text = RULES.read_text(encoding="utf-8")
    assert original in text, f"rule changed; update this test: {original}"
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    (tmp_path / "rules" / RULES.name).write_text(text.replace(original, mutant), encoding="utf-8")
    shutil.copy(RULE_TESTS, tmp_path / "tests" / RULE_TESTS.name)
    result = promtool("test", "rules", f"tests/{RULE_TESTS.name}", cwd=tmp_path)
    assert result.returncode != 0, f"the unit tests did not notice: {mutant}"


def test_every_alert_is_tested_both_firing_and_not_firing() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in load_yaml(RULE_TESTS)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {r["alert"] for r in alert_rules()}
    assert names - firing == set(), "alerts never shown firing"
    assert names - quiet == set(), "alerts never shown not firing"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_the_rule_tests_load_the_rule_file() -> None:
    files = load_yaml(RULE_TESTS)["rule_files"]
    assert [(RULE_TESTS.parent / f).resolve() for f in files] == [RULES.resolve()]


def test_alerts_are_documented_and_have_a_runbook_section() -> None:
    anchors = readme_anchors()
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"Monitor[A-Z][A-Za-z]+", name), name
        ann = rule.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            assert ann.get(key, "").strip(), f"{name}: no {key}"
        assert ann["runbook_url"] == f"deploy/README.md#runbook-{name.lower()}", name
        assert f"runbook-{name.lower()}" in anchors, (
            f"{name}: no runbook section in deploy/README.md"
        )
        assert rule["labels"]["severity"] in SEVERITIES, name
        duration_s(rule["for"])


def test_the_required_alerts_exist() -> None:
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    must_read = {
        "MonitorAccountsCritical": "monitor_accounts",
        "MonitorAccountsLiquidatable": "monitor_accounts",
        "MonitorContagionExposure": "monitor_healthy_notional_at_risk",
        "MonitorCascadeAmplification": "monitor_cascade_amplification",
        "MonitorCascadeLiquidatedNotional": "monitor_cascade_liquidated_notional",
        "MonitorStalePrice": "monitor_price_staleness_seconds",
        "MonitorConsumerLagHigh": "monitor_consumer_lag",
        "MonitorDown": "up",
        "MonitorAbsent": "up",
        "MonitorNotReady": "monitor_ready",
        "MonitorSnapshotTooOld": "monitor_snapshot_age_seconds",
        "MonitorDlqRate": "monitor_dlq_messages_total",
    }
    for alert, metric in must_read.items():
        assert alert in exprs, f"missing alert {alert}"
        assert metric in metric_names(exprs[alert]), f"{alert} does not read {metric}"
    assert "absent(" in exprs["MonitorAbsent"]


def test_book_wide_alerts_aggregate_over_instances() -> None:
    exprs = {r["alert"]: r["expr"] for r in alert_rules()}
    for alert in (
        "MonitorAccountsCritical",
        "MonitorAccountsLiquidatable",
        "MonitorContagionExposure",
    ):
        assert "sum without(instance)" in exprs[alert], alert
    # The worst case over instances, never a sum, for figures each computes.
    for alert in (
        "MonitorCascadeAmplification",
        "MonitorCascadeLiquidatedNotional",
        "MonitorStalePrice",
    ):
        assert "max without(instance)" in exprs[alert], alert


def test_rules_never_group_by_account() -> None:
    for rule in alert_rules() + recording_rules():
        assert "account" not in grouping_labels(rule["expr"]), rule["expr"]


def test_recording_rules_follow_the_level_metric_operation_convention() -> None:
    for rule in recording_rules():
        level, metric, op = rule["record"].split(":")
        assert level == "job", rule["record"]
        assert metric.startswith("monitor_"), rule["record"]
        assert op, rule["record"]
        assert "without(instance)" in rule["expr"], rule["record"]


def test_scrape_config_reaches_alertmanager_and_loads_the_rules() -> None:
    cfg = load_yaml(PROM_CONFIG)
    matched = [p for pattern in cfg["rule_files"] for p in PROM_DIR.glob(pattern)]
    assert matched == [RULES]
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert "monitor" in jobs, "the rules select job=monitor"
    assert cfg["global"]["external_labels"]["alert_source"] == "prometheus"


# --- Alertmanager -------------------------------------------------------------------


def _routes(route: dict) -> list[dict]:
    out = [route]
    for child in route.get("routes", []):
        out += _routes(child)
    return out


def test_alertmanager_routes_go_to_defined_receivers() -> None:
    cfg = load_yaml(ALERTMANAGER)
    receivers = {r["name"] for r in cfg["receivers"]}
    routes = _routes(cfg["route"])
    for route in routes:
        if "receiver" in route:
            assert route["receiver"] in receivers
    used = {r["receiver"] for r in routes if "receiver" in r}
    assert receivers - used == set(), "receivers no route uses"


def test_every_severity_has_its_own_route() -> None:
    cfg = load_yaml(ALERTMANAGER)
    routed = {}
    for route in cfg["route"].get("routes", []):
        for m in route.get("matchers", []):
            hit = re.fullmatch(r'severity="(\w+)"', m.replace(" ", ""))
            if hit:
                routed[hit.group(1)] = route["receiver"]
    severities = {r["labels"]["severity"] for r in alert_rules()}
    assert severities <= routed.keys()
    assert routed["page"] != routed["ticket"]


def test_inhibit_rules_name_existing_alerts_and_dedupe_grafana_copies() -> None:
    cfg = load_yaml(ALERTMANAGER)
    names = {r["alert"] for r in alert_rules()}
    for rule in cfg["inhibit_rules"]:
        for m in rule.get("source_matchers", []) + rule.get("target_matchers", []):
            hit = re.fullmatch(r'alertname(=~|=)"([^"]+)"', m.replace(" ", ""))
            if hit:
                listed = set(hit.group(2).split("|"))
                assert listed <= names, listed - names
    dedupe = [
        r
        for r in cfg["inhibit_rules"]
        if r.get("source_matchers") == ['alert_source="prometheus"']
        and r.get("target_matchers") == ['alert_source="grafana"']
    ]
    assert dedupe and dedupe[0]["equal"] == ["alertname"]


def test_amtool_accepts_the_alertmanager_config_and_routes_by_severity() -> None:
    amtool = require_tool("amtool")
    result = subprocess.run(
        [amtool, "check-config", str(ALERTMANAGER)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for severity, receiver in (("page", "risk-pager"), ("ticket", "risk-desk")):
        result = subprocess.run(
            [
                amtool,
                "config",
                "routes",
                "test",
                f"--config.file={ALERTMANAGER}",
                f"severity={severity}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.stdout.strip() == receiver, result.stdout + result.stderr
