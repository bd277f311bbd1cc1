"""The PromQL scanner the other deploy tests rely on finds what it must find."""

from __future__ import annotations

import pytest

from tests.deploy.helpers import (
    check_expression,
    duration_s,
    grafana_variables,
    grouping_labels,
    metric_names,
    selector_labels,
    substitute_grafana_variables,
)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("monitor_ready < 1", {"monitor_ready"}),
        ('absent(up{job="monitor"} == 1) > 0', {"up"}),
        (
            "histogram_quantile(0.99, sum without(instance) "
            "(rate(monitor_tick_age_seconds_bucket[5m]))) > 1",
            {"monitor_tick_age_seconds_bucket"},
        ),
        ("sum without(instance) (monitor_total_equity) > 1e+06", {"monitor_total_equity"}),
        (
            'sum by (job, topic) (max without(instance) (monitor_consumer_lag{job=~"$job"}))',
            {"monitor_consumer_lag"},
        ),
        (
            "sum without(instance) (monitor_ready) / sum without(instance) (up) offset 5m",
            {"monitor_ready", "up"},
        ),
        ('label_replace(monitor_accounts, "x", "$1", "status", "(.*)")', {"monitor_accounts"}),
    ],
)
def test_metric_names_are_found_and_functions_are_not(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_labels_in_matchers_and_groupings_are_found() -> None:
    expr = 'sum by (status) (monitor_accounts{job=~"$job",status!="healthy"})'
    assert selector_labels(expr) == [("monitor_accounts", {"job", "status"})]
    assert grouping_labels(expr) == {"status"}


# A contract as the live scrape gives it: series name -> labels (with the target's).
CONTRACT = {
    "monitor_accounts": frozenset({"status", "instance", "job"}),
    "monitor_consumer_lag": frozenset({"topic", "partition", "instance", "job"}),
    "monitor_apply_seconds_bucket": frozenset({"le", "instance", "job"}),
    "monitor_apply_seconds_count": frozenset({"instance", "job"}),
    "monitor_apply_seconds_sum": frozenset({"instance", "job"}),
}
VALUES = {"status": {"healthy", "warning", "critical", "liquidatable"}}


def check(expr: str) -> list[str]:
    return check_expression(expr, CONTRACT, VALUES)


def test_an_account_label_or_unknown_metric_is_reported() -> None:
    assert check("monitor_accounts > 0") == []
    assert check('sum by (status) (monitor_accounts{status="critical"})') == []
    assert any("'account'" in p for p in check('monitor_accounts{account="A1"}'))
    assert any("'account'" in p for p in check("sum by (account) (monitor_accounts)"))
    assert any("monitor_acounts" in p for p in check("monitor_acounts > 0"))
    assert any("'status'" in p for p in check('monitor_consumer_lag{status="x"}'))
    assert any("'bankrupt'" in p for p in check('monitor_accounts{status="bankrupt"}'))
    assert any("reads no metric" in p for p in check("vector(1)"))
    # Histogram series exist only with their suffixes.
    assert check("rate(monitor_apply_seconds_count[5m])") == []
    assert check("monitor_apply_seconds") != []


def test_recorded_series_carry_the_labels_of_their_input() -> None:
    from tests.deploy.helpers import recorded_series

    recorded = recorded_series(CONTRACT)
    assert recorded["job:monitor_accounts:sum"] == {"job", "status"}


def test_grafana_variables_are_recognised_and_replaced() -> None:
    expr = 'rate(monitor_alerts_total{job=~"$job",kind="${kind}"}[$__rate_interval])'
    assert grafana_variables(expr) == {"job", "kind"}
    assert substitute_grafana_variables(expr) == 'rate(monitor_alerts_total{job=~"x",kind="x"}[5m])'


@pytest.mark.parametrize(("text", "seconds"), [("0s", 0), ("30s", 30), ("2m", 120), ("1m30s", 90)])
def test_durations(text: str, seconds: float) -> None:
    assert duration_s(text) == seconds


def test_a_bad_duration_is_an_error() -> None:
    with pytest.raises(ValueError):
        duration_s("5 minutes")
