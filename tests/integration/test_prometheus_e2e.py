"""End to end: a real Prometheus scrapes a running `monitor run` fed through a real
Kafka-compatible broker, with the repository's rules, dashboard and Grafana rules.

The monitor runs the Compose stack's config (deploy/monitor/monitor.toml) with
``MONITOR_*`` overrides for the addresses (Tansu, Mosquitto, loopback ports) and
faster market jobs. Prometheus runs the stack's prometheus.yml with a 1 s scrape
and evaluation interval, a static target, and a copy of the rules with every
``for`` shortened to 1 s. The servers are module-scoped: each test reuses them.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
import yaml

from tests.deploy.helpers import (
    GRAFANA_INTERVALS,
    GRAFANA_VARIABLE,
    MONITOR_TOML,
    PROM_CONFIG,
    PROMETHEUS_SERIES,
    README,
    REPO,
    RULES,
    TARGET_LABELS,
    Contract,
    alert_rules,
    check_expression,
    dashboard,
    dashboard_exprs,
    grafana_rules,
    load_toml,
    load_yaml,
    metric_names,
    recorded_series,
    recording_rules,
    require_tool,
    variable_exprs,
)
from tests.support.monitor_daemon import MonitorDaemon
from tests.support.mosquitto import Mosquitto
from tests.support.prometheus import Exposition, PrometheusServer, exposition
from tests.support.tansu import TansuBroker, create_topics, free_port, produce

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    # One worker runs the whole module, so the servers are started once.
    pytest.mark.xdist_group("prometheus-e2e"),
]

T = TypeVar("T")
CFG = load_toml(MONITOR_TOML)
TOPICS = CFG["topics"]
BTC_ENTRY, BTC_CRASH = 64_000.0, 61_800.0
# A1: 60k USDT, long 500 ETH-PERP and 20 BTC-PERP at the marks. At BTC 61,800 its
# BTC loss (-44k) leaves 16k of equity against ~25k of maintenance margin: it is
# liquidatable, and its 1.5M of ETH-PERP, not losing, is healthy notional at risk.
A1_EVENTS = [
    {"type": "balance", "account": "A1", "asset": "USDT", "amount": 60_000.0},
    {"type": "position", "account": "A1", "symbol": "ETH-PERP", "qty": 500.0,
     "entry_price": 3_000.0},
    {"type": "position", "account": "A1", "symbol": "BTC-PERP", "qty": 20.0,
     "entry_price": BTC_ENTRY},
]  # fmt: skip
CONTAGION_ALERTS = {"MonitorAccountsLiquidatable", "MonitorContagionExposure"}
WAIT_S = 30.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def wait_for(what: str, probe: Callable[[], T | None], timeout_s: float = WAIT_S) -> T:
    """Poll ``probe`` until it returns something other than None (or fail)."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = probe()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.2)


class Ticker:
    """Keeps the monitor's marks fresh: every price is sent again, stamped now,
    every 0.25 s (the stack's stale-price limit is 30 s); ``set`` moves one."""

    def __init__(self, bootstrap: str, topic: str, prices: dict[str, float]) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.prices = dict(prices)
        self._stop = threading.Event()
        self._sent = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._sent.wait(30):
            raise RuntimeError("the ticker could not publish")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def set(self, symbol: str, price: float) -> None:
        self.prices = {**self.prices, symbol: price}

    async def _run(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0)
        await producer.start()
        try:
            while not self._stop.is_set():
                ts = now_ms()
                for symbol, price in self.prices.items():
                    tick = {"type": "tick", "symbol": symbol, "price": price, "ts": ts}
                    await producer.send(self.topic, msgspec.json.encode(tick), key=symbol.encode())
                await producer.flush()
                self._sent.set()
                await asyncio.sleep(0.25)
        finally:
            await producer.stop()


@dataclass
class Stack:
    monitor: MonitorDaemon
    prometheus: PrometheusServer
    ticker: Ticker

    def scrape(self) -> Exposition:
        return exposition(self.monitor.metrics())

    def sample(self, name: str, **labels: str) -> float | None:
        """One sample of the monitor's own /metrics, or None if it is not there."""
        for line in self.monitor.metrics().splitlines():
            if not line.startswith(name + ("{" if labels else " ")):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return None

    def wait_status(self, status: str) -> None:
        """Until the monitor counts A1 (its only account) under ``status``."""
        wait_for(
            f"A1 {status}",
            lambda: True if self.sample("monitor_accounts", status=status) == 1.0 else None,
        )

    def prometheus_sees_healthy(self) -> bool:
        result = self.prometheus.query('monitor_accounts{status="healthy"}')["data"]["result"]
        return [r["value"][1] for r in result] == ["1"]

    def firing_contagion(self) -> dict[str, list[dict[str, Any]]] | None:
        firing = self.firing()
        return firing if set(firing) >= CONTAGION_ALERTS else None

    def firing(self) -> dict[str, list[dict[str, Any]]]:
        return {
            name: [a for a in alerts if a["state"] == "firing"]
            for name, alerts in self.prometheus.alerts().items()
            if any(a["state"] == "firing" for a in alerts)
        }


def fast_rules(path: Path) -> Path:
    """The repository's rules with every non-zero `for` shortened to 1 s."""
    rules = load_yaml(RULES)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("for", "0s") != "0s":
                rule["for"] = "1s"
    path.write_text(yaml.safe_dump(rules, sort_keys=False), encoding="utf-8")
    return path


def prometheus_config(rules: Path, target: str) -> dict[str, Any]:
    """The stack's prometheus.yml at 1 s, scraping ``target`` as job monitor."""
    cfg = load_yaml(PROM_CONFIG)
    cfg["global"]["scrape_interval"] = cfg["global"]["evaluation_interval"] = "1s"
    cfg["rule_files"] = [str(rules)]
    cfg.pop("alerting", None)  # no Alertmanager here
    (monitor,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "monitor"]
    monitor.pop("dns_sd_configs")
    monitor["static_configs"] = [{"targets": [target]}]
    cfg["scrape_configs"] = [monitor]
    return cfg


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("prometheus-e2e")
    prometheus_bin = require_tool("prometheus")
    with TansuBroker() as broker:
        asyncio.run(create_topics(broker.bootstrap, TOPICS.values(), 1))
        mqtt = Mosquitto(work / "mosquitto")
        mqtt.start()
        port = free_port()
        # The stack's config; only addresses, the state dir, the instruments file
        # the image carries (config/instruments.toml) and the market intervals change.
        env = {
            "MONITOR_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "MONITOR_HTTP_HOST": "127.0.0.1",
            "MONITOR_HTTP_PORT": str(port),
            "MONITOR_STATE_DIR": str(work / "state"),
            "MONITOR_MQTT_HOST": mqtt.host,
            "MONITOR_MQTT_PORT": str(mqtt.port),
            "MONITOR_INSTRUMENTS_FILE": str(REPO / "config" / "instruments.toml"),
            "MONITOR_MARKET_MAP_INTERVAL_S": "1",
            "MONITOR_MARKET_CASCADE_INTERVAL_S": "1",
        }
        monitor = MonitorDaemon(MONITOR_TOML, env, port, work / "monitor.log")
        ticker = Ticker(broker.bootstrap, TOPICS["prices"],
                        {"BTC-PERP": BTC_ENTRY, "ETH-PERP": 3_000.0})  # fmt: skip
        prom = PrometheusServer(
            prometheus_bin, work / "prometheus",
            prometheus_config(fast_rules(work / "rules.yml"), f"127.0.0.1:{port}"),
        )  # fmt: skip
        try:
            monitor.start()
            ticker.start()
            ts = now_ms()
            events = [(b"A1", msgspec.json.encode({**e, "ts": ts})) for e in A1_EVENTS]
            asyncio.run(produce(broker.bootstrap, TOPICS["account_events"], events))
            prom.start()
            s = Stack(monitor, prom, ticker)
            s.wait_status("healthy")
            wait_for("Prometheus to have scraped A1", lambda: s.prometheus_sees_healthy() or None)
            yield s
        finally:
            ticker.stop()
            prom.stop()
            monitor.stop()
            mqtt.stop()


def test_an_account_driven_into_contagion_fires_the_alerts_and_they_clear(stack: Stack) -> None:
    prom = stack.prometheus
    up = prom.query('up{job="monitor"}')["data"]["result"]
    assert [r["value"][1] for r in up] == ["1"], up
    assert not CONTAGION_ALERTS & set(stack.firing()), "firing before the crash"

    stack.ticker.set("BTC-PERP", BTC_CRASH)
    firing = wait_for(
        "MonitorAccountsLiquidatable and MonitorContagionExposure firing", stack.firing_contagion
    )
    (liquidatable,) = firing["MonitorAccountsLiquidatable"]
    assert liquidatable["labels"]["severity"] == "page"
    assert liquidatable["annotations"]["summary"] == "1 account(s) liquidatable"
    (contagion,) = firing["MonitorContagionExposure"]
    assert contagion["labels"]["severity"] == "ticket"
    assert contagion["annotations"]["summary"] == "Healthy notional at risk 1.5M"
    assert float(contagion["value"]) == pytest.approx(1.5e6)
    # The monitor's own figures behind them, as Prometheus has them.
    result = prom.query('monitor_accounts{status="liquidatable"}')["data"]["result"]
    assert [r["value"][1] for r in result] == ["1"]

    stack.ticker.set("BTC-PERP", BTC_ENTRY)
    wait_for(
        "both alerts to clear",
        lambda: True if not CONTAGION_ALERTS & set(prom.alerts()) else None,
    )
    rules = prom.api("rules", type="alert")["data"]["groups"]
    states = {r["name"]: r["state"] for g in rules for r in g["rules"]}
    assert {states[a] for a in CONTAGION_ALERTS} == {"inactive"}


@pytest.fixture(scope="module")
def scrape(stack: Stack) -> Exposition:
    """The monitor's /metrics once every family it has has been used: a margin
    alert firing and resolving, and one held back by flood control (a second
    firing within [alerts] min_interval_s)."""

    def cycle() -> None:
        stack.ticker.set("BTC-PERP", BTC_CRASH)
        stack.wait_status("liquidatable")
        stack.ticker.set("BTC-PERP", BTC_ENTRY)
        stack.wait_status("healthy")

    for _ in range(3):
        cycle()
        if (stack.sample("monitor_alerts_suppressed_total", kind="margin") or 0) > 0:
            break
    assert (stack.sample("monitor_alerts_suppressed_total", kind="margin") or 0) > 0
    assert (stack.sample("monitor_alerts_total", kind="margin", state="resolved") or 0) > 0
    # Let Prometheus scrape and evaluate this state too.
    time.sleep(2)
    return stack.scrape()


def grafana_free(expr: str) -> str:
    """A dashboard or Grafana expression as Grafana would send it here."""
    expr = GRAFANA_INTERVALS.sub("10s", expr)  # 4 x the 1 s scrape, rounded up
    values = {"job": "monitor", "underlying": "BTC"}
    return GRAFANA_VARIABLE.sub(lambda m: values[m.group(1) or m.group(2)], expr)


def every_expression() -> list[tuple[str, str]]:
    """(where, expression) of every PromQL the deployment ships."""
    board = dashboard()
    out = [(f"dashboard: {e}", e) for e in dashboard_exprs(board)]
    out += [(f"dashboard variable: {e}", e) for e in variable_exprs(board)]
    out += [(f"grafana rule {r['title']}", q["expr"]) for r, q, _ in grafana_rules()]
    out += [(f"rule {r['alert']}", r["expr"]) for r in alert_rules()]
    out += [(f"recording rule {r['record']}", r["expr"]) for r in recording_rules()]
    return out


def test_every_shipped_expression_evaluates_on_the_live_prometheus(
    stack: Stack, scrape: Exposition
) -> None:
    exprs = every_expression()
    assert len(exprs) > 60
    errors, empty = [], []
    for where, expr in exprs:
        answer = stack.prometheus.query(grafana_free(expr))
        if answer["status"] != "success":
            errors.append(f"{where}: {answer.get('error')}")
        elif not answer["data"]["result"] and where.startswith("dashboard"):
            empty.append(where)
    assert errors == []
    # A panel that shows nothing while the monitor runs reads a series it does not
    # have (or a label value it never sets).
    assert empty == []


def live_contract(scrape: Exposition) -> Contract:
    known = {name: labels | TARGET_LABELS for name, labels in scrape.series.items()}
    known |= PROMETHEUS_SERIES
    return known | recorded_series(known)


def test_shipped_expressions_read_only_series_and_labels_the_monitor_exports(
    scrape: Exposition,
) -> None:
    known = live_contract(scrape)
    problems = [
        p for _, e in every_expression() for p in check_expression(e, known, scrape.label_values)
    ]
    assert problems == []


def test_the_checker_would_notice_a_metric_the_monitor_does_not_export(
    scrape: Exposition,
) -> None:
    known = live_contract(scrape)
    assert check_expression("monitor_accounts_total > 0", known) != []
    assert check_expression('monitor_accounts{status="bankrupt"}', known, scrape.label_values)


def test_the_dashboard_shows_every_metric_the_monitor_exports(scrape: Exposition) -> None:
    used = set().union(*(metric_names(e) for e in dashboard_exprs(dashboard())))
    missing = [
        name
        for name, (kind, _) in scrape.families.items()
        if (f"{name}_bucket" if kind == "histogram" else name) not in used
    ]
    assert missing == []


def readme_metric_table() -> dict[str, tuple[str, frozenset[str]]]:
    """deploy/README.md's metric table: name -> (type, label names)."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Metrics") :]
    rows = re.findall(r"^\| `(monitor_\w+)` \| (\w*) \|([^|]*)\|", section, re.M)
    out = {}
    for name, kind, labels in rows:
        names = re.findall(r"`(\w+)`", re.sub(r"\([^)]*\)", "", labels))
        out[name] = (kind or "gauge", frozenset(names))
    return out


def test_the_deploy_readme_lists_exactly_the_exported_metrics(scrape: Exposition) -> None:
    table = readme_metric_table()
    assert set(table) == set(scrape.families), (
        f"missing from the table: {sorted(set(scrape.families) - set(table))}; "
        f"not exported: {sorted(set(table) - set(scrape.families))}"
    )
    for name, (kind, labels) in scrape.families.items():
        assert table[name] == (kind, labels), name
    # No metric carries an account id.
    assert not any("account" in labels for _, labels in scrape.families.values())
