"""Config: strict TOML, typed sections, MONITOR_* overrides, check-config."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.cli import main
from monitor.config import build_config, default_config_path, load_config
from monitor.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_default_is_valid_and_config_monitor_toml_points_at_it() -> None:
    cfg = load_config(env={})
    assert cfg.kafka.fetch_max_wait_ms == 10
    assert cfg.topics.account_events == "account-events"
    assert cfg.topics.dlq == "monitor-dlq"
    assert cfg.http.port == 9464
    link = ROOT / "config" / "monitor.toml"
    assert link.is_symlink()
    assert link.resolve() == default_config_path().resolve()


def test_an_unknown_key_is_an_error_naming_the_file_and_the_key(tmp_path: Path) -> None:
    f = tmp_path / "m.toml"
    f.write_text('[kafka]\nbootstrap_server = "x:1"\n')
    with pytest.raises(ConfigError, match=r"m\.toml: kafka\.bootstrap_server: unknown key"):
        load_config(f, env={})


def test_an_unknown_section_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"\[kafak\]: unknown section"):
        build_config({"kafak": {}}, source="f.toml", env={})


def test_values_are_type_checked() -> None:
    with pytest.raises(ConfigError, match=r"http\.port: expected an integer"):
        build_config({"http": {"port": "9000"}}, env={})
    with pytest.raises(ConfigError, match=r"state\.snapshot_interval_s: expected a number"):
        build_config({"state": {"snapshot_interval_s": True}}, env={})
    with pytest.raises(ConfigError, match="expected one of"):
        build_config({"kafka": {"security_protocol": "TLS"}}, env={})
    assert (
        build_config({"state": {"snapshot_interval_s": 5}}, env={}).state.snapshot_interval_s == 5.0
    )
    with pytest.raises(ConfigError, match=r"state\.close_retention_s: must be > 0"):
        build_config({"state": {"close_retention_s": 0}}, env={})
    assert build_config({}, env={}).state.close_retention_s == 7 * 86_400.0


def test_range_checks_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"http\.port: must be in"):
        build_config({"http": {"port": 70000}}, env={})
    with pytest.raises(ConfigError, match="snapshot_interval_s: must be > 0"):
        build_config({"state": {"snapshot_interval_s": 0}}, env={})


def test_environment_overrides_win_over_the_file() -> None:
    env = {
        "MONITOR_KAFKA_BOOTSTRAP_SERVERS": "b1:9092,b2:9092",
        "MONITOR_HTTP_PORT": "9000",
        "MONITOR_STATE_SNAPSHOT_INTERVAL_S": "2.5",
        "MONITOR_TOPICS_PRICES": "px",
        "OTHER": "ignored",
    }
    cfg = build_config({"http": {"port": 1}}, env=env)
    assert cfg.kafka.servers == ["b1:9092", "b2:9092"]
    assert cfg.http.port == 9000
    assert cfg.state.snapshot_interval_s == 2.5
    assert cfg.topics.prices == "px"


def test_a_bad_or_unknown_environment_variable_is_named() -> None:
    with pytest.raises(ConfigError, match="MONITOR_HTTP_PORT: expected an integer"):
        build_config({}, env={"MONITOR_HTTP_PORT": "nine"})
    with pytest.raises(ConfigError, match="MONITOR_KAFKA_BOOTSTRAP: unknown key `bootstrap`"):
        build_config({}, env={"MONITOR_KAFKA_BOOTSTRAP": "x"})


def test_the_alerts_mqtt_and_market_sections_are_built_from_their_dataclasses() -> None:
    cfg = build_config(
        {"alerts": {"warning_ratio": 0.7, "critical_ratio": 0.85}, "mqtt": {"port": 1884}},
        env={"MONITOR_ALERTS_HYSTERESIS": "0.02", "MONITOR_MQTT_USERNAME": "u"},
    )
    assert cfg.alerts.warning_ratio == 0.7
    assert cfg.alerts.hysteresis == 0.02
    assert cfg.mqtt.port == 1884
    assert cfg.mqtt.username == "u"
    assert cfg.market is not None
    with pytest.raises(ConfigError, match=r"alerts\.warn: unknown key"):
        build_config({"alerts": {"warn": 1.0}}, env={})
    with pytest.raises(ConfigError, match="alerts"):
        build_config({"alerts": {"warning_ratio": 0.95}}, env={})  # above critical


def test_check_config_prints_the_effective_config_with_secrets_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "m.toml"
    f.write_text('[kafka]\nsasl_password = "hunter2"\n[http]\nport = 9100\n')
    monkeypatch.setenv("MONITOR_HEALTH_STALL_AFTER_S", "12")
    assert main(["check-config", str(f)]) == 0
    out = capsys.readouterr().out
    assert "port = 9100" in out
    assert "stall_after_s = 12.0" in out
    assert "hunter2" not in out and 'sasl_password = "***"' in out
    import tomllib

    tomllib.loads(out)  # the output is itself valid TOML


def test_check_config_exits_2_with_a_one_line_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "m.toml"
    f.write_text("[http]\nprot = 1\n")
    assert main(["check-config", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "http.prot: unknown key" in err


def test_a_monitor_variable_naming_no_section_is_an_error() -> None:
    with pytest.raises(ConfigError, match="MONITOR_KAFAK_PORT: names no section"):
        build_config({}, env={"MONITOR_KAFAK_PORT": "1"})


def test_the_instance_id_defaults_to_a_file_safe_host_name() -> None:
    cfg = build_config({}, env={})
    assert cfg.instance.name and all(c.isalnum() or c in "._-" for c in cfg.instance.name)
    assert build_config({"instance": {"id": "monitor-2"}}, env={}).instance.name == "monitor-2"
    with pytest.raises(ConfigError, match=r"instance\.id"):
        build_config({"instance": {"id": "a/b"}}, env={})


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(ConfigError, match=r"ssl_certfile and kafka\.ssl_keyfile"):
        build_config({"kafka": {"ssl_certfile": "c.pem"}}, env={})


def test_queue_and_poll_bounds_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="max_poll_records: must be > 0"):
        build_config({"kafka": {"max_poll_records": 0}}, env={})
    cfg = build_config({"kafka": {"event_queue_max_messages": 10, "prices_start": "now"}}, env={})
    assert cfg.kafka.event_queue_max_messages == 10 and cfg.kafka.prices_start == "now"
