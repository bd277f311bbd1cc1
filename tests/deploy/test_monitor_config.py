"""The daemon configs shipped in deploy/: the schema, sane values, and thresholds
that agree with the alerting rules."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.helpers import (
    CONFIG_SCHEMA,
    K8S,
    MONITOR_TOML,
    OPTIONAL_KEYS,
    REPO,
    SYSTEMD_TOML,
    alert_rules,
    load_toml,
    load_yaml,
    norm,
)


def configmap_toml() -> dict[str, Any]:
    cm = load_yaml(K8S / "configmap.yaml")
    return tomllib.loads(cm["data"]["monitor.toml"])


CONFIGS = {
    "compose": lambda: load_toml(MONITOR_TOML),
    "k8s": configmap_toml,
    "systemd": lambda: load_toml(SYSTEMD_TOML),
}
# What a deployment's config may change from the Compose stack's: where things are.
ADDRESSES = {("kafka", "bootstrap_servers"), ("mqtt", "host"), ("mqtt", "port")}


@pytest.fixture(params=sorted(CONFIGS))
def cfg(request: pytest.FixtureRequest) -> dict[str, Any]:
    return CONFIGS[request.param]()


def test_config_uses_only_known_sections_and_keys(cfg: dict[str, Any]) -> None:
    assert set(cfg) == set(CONFIG_SCHEMA)
    for section, table in cfg.items():
        unknown = set(table) - CONFIG_SCHEMA[section]
        assert unknown == set(), f"[{section}] unknown keys {unknown}"
        missing = {
            k for k in CONFIG_SCHEMA[section] - set(table) if (section, k) not in OPTIONAL_KEYS
        }
        assert missing == set(), f"[{section}] missing keys {missing}"


def test_config_carries_no_secret(cfg: dict[str, Any]) -> None:
    assert "sasl_password" not in cfg["kafka"]
    assert "password" not in cfg["mqtt"]


def test_status_levels_ascend_and_hysteresis_fits_below_them(cfg: dict[str, Any]) -> None:
    a = cfg["alerts"]
    assert 0 < a["warning_ratio"] < a["critical_ratio"] < a["liquidatable_ratio"] == 1.0
    assert 0 < a["hysteresis"] < a["critical_ratio"] - a["warning_ratio"]
    assert 0 <= a["contagion_min_share"] <= 1  # 0: only the amount counts (OR semantics)
    assert a["contagion_min_notional"] > 0 and a["stale_price_s"] > 0


def test_durations_are_positive_seconds(cfg: dict[str, Any]) -> None:
    for section, table in cfg.items():
        for key, value in table.items():
            if key.endswith("_s"):
                assert isinstance(value, int | float) and not isinstance(value, bool), key
                assert value > 0, f"[{section}] {key} = {value!r}"


def test_shocks_name_underlyings_of_the_instruments(cfg: dict[str, Any]) -> None:
    instruments = load_toml(REPO / "config" / "instruments.toml")
    underlyings = {i["underlying"] for i in instruments["instruments"].values()}
    assert cfg["market"]["shocks"], "the cascade needs at least one shock"
    for shock in cfg["market"]["shocks"]:
        for part in shock.split(","):  # one scenario may move several underlyings
            m = re.fullmatch(r"([A-Z0-9]+)=([+-]\d+(?:\.\d+)?)%", part)
            assert m, f"{shock!r} is not UNDERLYING=+-N%[,...]"
            assert m.group(1) in underlyings, f"{shock}: unknown underlying"
            assert 0 < abs(float(m.group(2))) < 100


def test_ports_and_paths(cfg: dict[str, Any]) -> None:
    assert 1024 < cfg["http"]["port"] < 65536
    assert cfg["state"]["dir"] == "/var/lib/monitor"


@pytest.mark.parametrize("name", ["compose", "k8s"])
def test_container_configs_listen_outside_and_name_the_image_instruments(name: str) -> None:
    cfg = CONFIGS[name]()
    assert cfg["http"]["host"] == "0.0.0.0", "probes and Prometheus reach it from outside"
    assert cfg["instruments"]["file"] == "/usr/local/share/monitor/instruments.toml"


def test_the_host_config_uses_local_brokers_and_the_bundled_instruments() -> None:
    cfg = load_toml(SYSTEMD_TOML)
    for server in cfg["kafka"]["bootstrap_servers"].split(","):
        assert server.strip().rsplit(":", 1)[0] in {"localhost", "127.0.0.1"}, server
    assert cfg["mqtt"]["host"] in {"localhost", "127.0.0.1"}
    assert cfg["http"]["host"] == "127.0.0.1", "a plain host does not expose /metrics by default"
    # Empty: the package's own instruments; no file that a plain host lacks.
    assert cfg["instruments"]["file"] == ""


@pytest.mark.parametrize("name", ["k8s", "systemd"])
def test_deployment_configs_differ_from_the_stack_only_in_addresses(name: str) -> None:
    compose, other = load_toml(MONITOR_TOML), CONFIGS[name]()
    allowed = set(ADDRESSES)
    if name == "systemd":
        allowed |= {("http", "host"), ("instruments", "file")}
    for section in CONFIG_SCHEMA:
        for key in CONFIG_SCHEMA[section]:
            if (section, key) not in allowed:
                assert compose[section].get(key) == other[section].get(key), f"[{section}] {key}"


def threshold(alert: str) -> float:
    expr = norm(next(r["expr"] for r in alert_rules() if r["alert"] == alert))
    m = re.search(r"> ([0-9.e+]+)$", expr)
    assert m, expr
    return float(m.group(1))


def test_alert_thresholds_match_the_daemon_config() -> None:
    cfg = load_toml(MONITOR_TOML)
    assert threshold("MonitorStalePrice") == cfg["alerts"]["stale_price_s"]
    amplification = cfg["market"]["cascade_amplification_threshold"]
    assert threshold("MonitorCascadeAmplification") == amplification
    notional = cfg["market"]["cascade_notional_threshold"]
    assert threshold("MonitorCascadeLiquidatedNotional") == notional
    # A snapshot is "too old" only after several missed intervals.
    assert threshold("MonitorSnapshotTooOld") >= 3 * cfg["state"]["snapshot_interval_s"]


def test_the_daemon_loader_accepts_the_shipped_configs_and_pod_overrides(tmp_path: Path) -> None:
    from monitor import config

    k8s_file = tmp_path / "monitor.toml"
    k8s_file.write_text(load_yaml(K8S / "configmap.yaml")["data"]["monitor.toml"], "utf-8")
    # The variables the StatefulSet sets (the Secret's are optional).
    env = {
        "MONITOR_KAFKA_CLIENT_ID": "monitor-0",
        "MONITOR_MQTT_CLIENT_ID": "monitor-0",
        "MONITOR_KAFKA_SASL_PASSWORD": "s3cret",
    }
    for path in (MONITOR_TOML, k8s_file, SYSTEMD_TOML):
        loaded = config.load_config(path, env=env).as_dict(redact=False)
        assert loaded["kafka"]["client_id"] == "monitor-0"
        assert loaded["mqtt"]["client_id"] == "monitor-0"
        assert loaded["kafka"]["sasl_password"] == "s3cret"
        shipped = load_toml(path)
        for section, table in shipped.items():
            for key, value in table.items():
                if key != "client_id":
                    assert loaded[section][key] == value, f"[{section}] {key}"
