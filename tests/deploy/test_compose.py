"""deploy/compose.yaml: every file, volume, service and port it refers to exists and
agrees with the configs mounted into the services."""

from __future__ import annotations

import argparse
import base64
import itertools
import os
import re
import shlex
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.helpers import (
    COMPOSE,
    DEPLOY,
    DOCKERFILE,
    GRAFANA_ALERTS,
    GRAFANA_DASHBOARDS,
    GRAFANA_DATASOURCE,
    MONITOR_TOML,
    PROM_CONFIG,
    REPO,
    TOPICS_SCRIPT,
    dockerfile_instructions,
    final_stage,
    image_command,
    load_toml,
    load_yaml,
    require_tool,
    split_host_port,
)

SERVICES = {
    "kafka",
    "kafka-init",
    "mosquitto",
    "monitor",
    "feeder",
    "prometheus",
    "alertmanager",
    "grafana",
}
# The port each service listens on inside the stack.
CONTAINER_PORTS = {"prometheus": 9090, "alertmanager": 9093, "grafana": 3000}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def monitor_cfg() -> dict[str, Any]:
    return load_toml(MONITOR_TOML)


def volume_specs(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of every short-syntax volume of a service."""
    out = []
    for spec in service.get("volumes", []):
        parts = spec.split(":")
        assert len(parts) in (2, 3), spec
        out.append((parts[0], parts[1], parts[2] if len(parts) == 3 else "rw"))
    return out


def mount_target(service: dict[str, Any], source: str) -> str:
    targets = [t for s, t, _ in volume_specs(service) if s == source]
    assert targets, f"{source} is not mounted"
    return targets[0]


def env(service: dict[str, Any]) -> dict[str, str]:
    e = service.get("environment", {})
    if isinstance(e, list):
        e = dict(x.split("=", 1) for x in e)
    return {k: str(v) for k, v in e.items()}


def test_the_stack_has_every_service(services: dict[str, Any]) -> None:
    assert set(services) == SERVICES


def test_every_bind_mount_source_exists(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for source, _, _ in volume_specs(svc):
            if source.startswith((".", "/")):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"


def test_config_mounts_are_read_only(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for source, target, mode in volume_specs(svc):
            if source.startswith("."):
                assert mode == "ro", f"{name}: {source} -> {target} should be :ro"


def test_named_volumes_are_declared_and_all_used(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes", {}))
    used = {
        source
        for svc in compose["services"].values()
        for source, _, _ in volume_specs(svc)
        if not source.startswith((".", "/"))
    }
    assert used == declared


def has_healthcheck(svc: dict[str, Any]) -> bool:
    check = svc.get("healthcheck")
    if check is not None:
        return not check.get("disable", False) and bool(check.get("test"))
    if "build" in svc:
        stage = final_stage(dockerfile_instructions(REPO / svc["build"]["dockerfile"]))
        return any(i == "HEALTHCHECK" for i, _ in stage)
    return False


def test_dependencies_exist_and_their_conditions_can_be_met(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = spec["condition"]
            if condition == "service_healthy":
                assert has_healthcheck(services[dep]), f"{name} waits for {dep}'s health: none"
            elif condition == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} must be one-shot"
            else:
                assert condition == "service_started", condition


def test_long_running_services_have_healthchecks_and_restart(services: dict[str, Any]) -> None:
    for name in ("kafka", "mosquitto", "monitor", "prometheus", "alertmanager", "grafana"):
        assert has_healthcheck(services[name]), name
        assert services[name]["restart"] == "unless-stopped", name


def test_the_monitor_and_the_feeder_are_built_from_the_repository(
    services: dict[str, Any],
) -> None:
    for name in ("monitor", "feeder"):
        build = services[name]["build"]
        context = (DEPLOY / build["context"]).resolve()
        assert context == REPO
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE
        assert services[name]["image"] == services["monitor"]["image"]
    # The daemon runs the image's default command.
    assert "command" not in services["monitor"] and "entrypoint" not in services["monitor"]


def test_host_ports_bind_to_loopback_and_reach_the_service_port(
    services: dict[str, Any], monitor_cfg: dict[str, Any]
) -> None:
    expected = {**CONTAINER_PORTS, "monitor": monitor_cfg["http"]["port"]}
    seen = set()
    for name, svc in services.items():
        for spec in svc.get("ports", []):
            ip, host, container = spec.split(":")
            assert ip == "127.0.0.1", f"{name}: {spec} is reachable from the network"
            assert host not in seen, f"host port {host} used twice"
            seen.add(host)
            if name in expected:
                assert int(container) == expected[name], f"{name}: {spec}"
    for name in expected:
        assert services[name].get("ports"), f"{name} is not reachable from the host"


def kafka_listeners(svc: dict[str, Any], key: str) -> dict[str, str]:
    return dict(x.split("://", 1) for x in env(svc)[key].split(","))


def test_kafka_runs_in_kraft_mode(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    e = env(kafka)
    assert set(e["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in k for svc in services.values() for k in env(svc))
    listeners = kafka_listeners(kafka, "KAFKA_LISTENERS")
    protocols = dict(x.split(":") for x in e["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(listeners) <= set(protocols)
    controller = e["KAFKA_CONTROLLER_LISTENER_NAMES"]
    voter_id, _, voter = e["KAFKA_CONTROLLER_QUORUM_VOTERS"].partition("@")
    assert voter_id == e["KAFKA_NODE_ID"]
    assert split_host_port(voter) == ("kafka", split_host_port(listeners[controller])[1])
    assert e["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners
    assert len(base64.urlsafe_b64decode(e["CLUSTER_ID"] + "==")) == 16, "CLUSTER_ID: a base64 UUID"
    assert e["KAFKA_LOG_DIRS"] == mount_target(kafka, "kafka-data")
    assert e["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false", "topics come from kafka-init"


def test_the_host_listener_is_the_published_port(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    advertised = kafka_listeners(kafka, "KAFKA_ADVERTISED_LISTENERS")
    host, port = split_host_port(advertised["HOST"])
    assert host == "localhost"
    assert f"127.0.0.1:{port}:{port}" in kafka["ports"]


def test_the_monitor_config_points_at_the_stack(
    services: dict[str, Any], monitor_cfg: dict[str, Any]
) -> None:
    kafka_advertised = kafka_listeners(services["kafka"], "KAFKA_ADVERTISED_LISTENERS")
    internal = {
        split_host_port(a)
        for name, a in kafka_advertised.items()
        if name == env(services["kafka"])["KAFKA_INTER_BROKER_LISTENER_NAME"]
    }
    for server in monitor_cfg["kafka"]["bootstrap_servers"].split(","):
        host, port = split_host_port(server.strip())
        assert host in services
        assert (host, port) in internal, f"{server} is not Kafka's in-stack listener"
    assert monitor_cfg["kafka"]["security_protocol"] == "PLAINTEXT"
    mqtt = monitor_cfg["mqtt"]
    assert mqtt["enabled"] is True
    assert mqtt["host"] == "mosquitto" and mqtt["host"] in services
    assert mqtt["port"] in mosquitto_listeners()
    assert mqtt["tls"] is False


def test_the_monitor_service_mounts_its_config_and_state(
    services: dict[str, Any], monitor_cfg: dict[str, Any]
) -> None:
    monitor = services["monitor"]
    config_path = image_command()[image_command().index("--config") + 1]
    assert mount_target(monitor, "./monitor/monitor.toml") == config_path
    assert mount_target(monitor, "monitor-state") == monitor_cfg["state"]["dir"]
    grace = monitor["stop_grace_period"]
    assert grace.endswith("s") and int(grace[:-1]) >= 30, "time to checkpoint on SIGTERM"


def feeder_args(services: dict[str, Any]) -> argparse.Namespace:
    """The feeder's command, parsed as the `monitor publish` it runs."""
    from monitor.cli.commands import publish

    cmd = services["feeder"]["command"]
    assert cmd[0] == publish.NAME
    parser = argparse.ArgumentParser()
    publish.add_arguments(parser)
    return parser.parse_args(cmd[1:])


def image_files() -> dict[str, Path]:
    """Path in the image -> file in the repository, for every COPY of the final stage."""
    out = {}
    for instr, args in final_stage(dockerfile_instructions()):
        if instr != "COPY" or "--from" in args:
            continue
        *sources, dest = args.split()
        for src in sources:
            target = dest + Path(src).name if dest.endswith("/") else dest
            out[target] = REPO / src
    return out


def test_the_feeder_replays_re_stamped_in_real_time_to_the_stack_kafka(
    services: dict[str, Any], monitor_cfg: dict[str, Any]
) -> None:
    feeder = services["feeder"]
    args = feeder_args(services)
    # Re-stamped to now at real speed: event time is arrival time, so staleness and
    # tick-to-evaluation in the stack are those of a live feed.
    assert args.retime is True and args.speed == 1.0
    assert args.bootstrap == monitor_cfg["kafka"]["bootstrap_servers"]
    assert mount_target(feeder, "./monitor/monitor.toml") == args.config, "the stack's topics"
    assert args.topic_prices is None and args.topic_events is None
    assert feeder["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    assert feeder["depends_on"]["monitor"]["condition"] == "service_healthy"
    assert feeder.get("restart") == "no"
    assert feeder["healthcheck"]["disable"] is True, "the image's /healthz check does not apply"


def feeder_stream(services: dict[str, Any]) -> list[Any]:
    """Every event the feeder publishes, decoded, in publishing (event-time) order."""
    import heapq

    from monitor.cli.commands.publish import messages
    from monitor.events.decode import Decoder, Rejection
    from monitor.instruments import load_instruments

    files = image_files()
    paths = []
    for name in feeder_args(services).files:
        assert name in files, f"the image has no {name}"
        assert files[name].is_file(), f"{name}: {files[name]} is not in the repository"
        paths.append(str(files[name]))
    bad: list[str] = []
    merged = list(heapq.merge(*(messages(p, "prices", "events", bad) for p in paths),
                              key=lambda m: m.time_ms))  # fmt: skip
    assert bad == [], bad[:5]
    decoder = Decoder(load_instruments(REPO / "config" / "instruments.toml"))
    out = []
    for m in merged:
        ev = decoder.decode_event(m.value)
        assert not isinstance(ev, Rejection), (ev, m.value)
        out.append(ev)
    return out


def test_the_feeder_publishes_a_book_and_the_ticks_that_price_all_of_it(
    services: dict[str, Any], monitor_cfg: dict[str, Any]
) -> None:
    from monitor.events.schema import BalanceEvent, PositionEvent, Tick
    from monitor.instruments import load_instruments

    stream = feeder_stream(services)
    positions = [e for e in stream if isinstance(e, PositionEvent)]
    balances = [e for e in stream if isinstance(e, BalanceEvent)]
    ticks = [e for e in stream if isinstance(e, Tick)]
    accounts = {e.account for e in positions} | {e.account for e in balances}
    assert len(accounts) >= 1000 and len(positions) >= len(accounts)
    assert len(ticks) >= 1000
    # The book is in place before the first tick moves a price.
    assert max(e.ts for e in positions + balances) <= min(e.ts for e in ticks)
    # Every symbol the book needs a price for (its positions' symbols, the price
    # symbols of held collateral) ticks from the book's start to the end of the
    # feed, never falling silent for longer than the stack's stale-price limit:
    # MonitorStalePrice stays quiet while the feeder plays.
    params = load_instruments(REPO / "config" / "instruments.toml")
    price_symbol = {
        a.name: params.symbols[int(s)]
        for a, s in zip(params.assets, params.asset_price_sym, strict=True)
        if s >= 0
    }
    needed = {e.symbol for e in positions} | {
        price_symbol[e.asset] for e in balances if e.asset in price_symbol and e.amount != 0
    }
    assert {"BTC-PERP", "ETH-PERP", "SOL-PERP"} <= needed
    start = min(e.ts for e in positions + balances)
    end = max(e.ts for e in ticks)
    limit_ms = monitor_cfg["alerts"]["stale_price_s"] * 1000
    for symbol in sorted(needed):
        times = [start, *sorted(e.ts for e in ticks if e.symbol == symbol), end]
        assert len(times) > 2, f"{symbol}: no tick at all"
        gap = max(b - a for a, b in itertools.pairwise(times))
        assert gap <= limit_ms, f"{symbol}: silent for {gap / 1000:g} s"


def topic_calls(tmp_path: Path, extra_env: dict[str, str]) -> list[list[str]]:
    """Run create-topics.sh against a fake kafka-topics.sh that records its arguments."""
    log = tmp_path / "calls"
    fake = tmp_path / "kafka-topics.sh"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(log))}\n', encoding="utf-8")
    fake.chmod(0o755)
    environ = {**os.environ, **extra_env, "TOPICS_BIN": str(fake)}
    subprocess.run(["bash", str(TOPICS_SCRIPT)], env=environ, check=True, timeout=30)
    return [line.split() for line in log.read_text(encoding="utf-8").splitlines()]


def test_topic_init_creates_the_configured_topics(
    tmp_path: Path, services: dict[str, Any], monitor_cfg: dict[str, Any]
) -> None:
    init = services["kafka-init"]
    calls = topic_calls(tmp_path, env(init))
    creates = {}
    for call in calls:
        if "--create" not in call:
            continue
        assert "--if-not-exists" in call, "re-running the init must not fail"
        assert call[call.index("--bootstrap-server") + 1] == "kafka:9092"
        assert call[call.index("--replication-factor") + 1] == "1"
        configs = {call[i + 1] for i, a in enumerate(call) if a == "--config"}
        creates[call[call.index("--topic") + 1]] = (
            int(call[call.index("--partitions") + 1]),
            configs,
        )
    assert set(creates) == set(monitor_cfg["topics"].values())
    topics = monitor_cfg["topics"]
    assert creates[topics["prices"]][0] == 6
    assert creates[topics["account_events"]] == (12, {"cleanup.policy=compact"})
    assert "cleanup.policy=compact" in creates[topics["partials"]][1]
    assert "--describe" in calls[-1], "the init ends by showing what exists"


def test_topic_init_runs_the_mounted_script(services: dict[str, Any]) -> None:
    init = services["kafka-init"]
    target = mount_target(init, "./kafka/create-topics.sh")
    assert init["entrypoint"] == ["bash", target]
    assert init["image"] == services["kafka"]["image"], "the same Kafka tools as the broker"
    assert init["depends_on"] == {"kafka": {"condition": "service_healthy"}}


def mosquitto_listeners(path: Path = DEPLOY / "mosquitto" / "mosquitto.conf") -> list[int]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [int(x.split()[1]) for x in lines if x.startswith("listener ")]


def test_mosquitto_gets_its_config_and_listens_on_1883(services: dict[str, Any]) -> None:
    svc = services["mosquitto"]
    assert mount_target(svc, "./mosquitto/mosquitto.conf") == "/mosquitto/config/mosquitto.conf"
    assert mosquitto_listeners() == [1883]
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")
    data_dir = re.search(r"^persistence_location (\S+)", conf, re.M)
    assert data_dir is not None
    assert mount_target(svc, "mosquitto-data").rstrip("/") == data_dir.group(1).rstrip("/")
    test = svc["healthcheck"]["test"]
    assert "$$SYS/broker/version" in test, "$ must be escaped as $$ in compose"


def test_mosquitto_accepts_the_config(tmp_path: Path) -> None:
    exe = require_tool("mosquitto", "/usr/sbin/mosquitto")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text(encoding="utf-8")
    conf = conf.replace("listener 1883", f"listener {port} 127.0.0.1")
    conf = conf.replace("/mosquitto/data/", f"{tmp_path}/")
    (tmp_path / "m.conf").write_text(conf, encoding="utf-8")
    proc = subprocess.Popen(
        [exe, "-c", str(tmp_path / "m.conf")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                output = proc.stdout.read() if proc.stdout else ""
                pytest.fail(f"mosquitto rejected the config:\n{output}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not start listening"
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_prometheus_gets_its_config_rules_and_scrapes_the_monitor(
    services: dict[str, Any], monitor_cfg: dict[str, Any]
) -> None:
    prom = services["prometheus"]
    config_target = mount_target(prom, "./prometheus/prometheus.yml")
    assert f"--config.file={config_target}" in prom["command"]
    cfg = load_yaml(PROM_CONFIG)
    rules_target = mount_target(prom, "./prometheus/rules")
    for pattern in cfg["rule_files"]:
        resolved = os.path.normpath(os.path.join(os.path.dirname(config_target), pattern))
        assert resolved.startswith(rules_target + "/"), f"{pattern} is not in the mounted rules"
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    sd = jobs["monitor"]["dns_sd_configs"][0]
    assert sd["names"] == ["monitor"] and "monitor" in services
    assert sd["port"] == monitor_cfg["http"]["port"]
    targets = cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert [split_host_port(t) for t in targets] == [
        ("alertmanager", CONTAINER_PORTS["alertmanager"])
    ]
    for t in jobs["alertmanager"]["static_configs"][0]["targets"]:
        assert split_host_port(t) == ("alertmanager", CONTAINER_PORTS["alertmanager"])


def test_alertmanager_gets_its_config(services: dict[str, Any]) -> None:
    am = services["alertmanager"]
    target = mount_target(am, "./alertmanager/alertmanager.yml")
    assert f"--config.file={target}" in am["command"]


def test_grafana_is_provisioned_from_the_mounted_files(services: dict[str, Any]) -> None:
    graf = services["grafana"]
    assert mount_target(graf, "./grafana/provisioning") == "/etc/grafana/provisioning"
    dashboards_dir = mount_target(graf, "./grafana/dashboards")
    provider = load_yaml(GRAFANA_DASHBOARDS)["providers"][0]
    assert provider["options"]["path"] == dashboards_dir
    home = env(graf)["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent.as_posix() == dashboards_dir
    assert (DEPLOY / "grafana" / "dashboards" / Path(home).name).is_file()
    ds = load_yaml(GRAFANA_DATASOURCE)["datasources"][0]
    assert split_host_port(ds["url"]) == ("prometheus", CONTAINER_PORTS["prometheus"])
    scrape = load_yaml(PROM_CONFIG)["global"]["scrape_interval"]
    assert ds["jsonData"]["timeInterval"] == scrape
    alerting = load_yaml(GRAFANA_ALERTS)
    url = alerting["contactPoints"][0]["receivers"][0]["settings"]["url"]
    assert split_host_port(url) == ("alertmanager", CONTAINER_PORTS["alertmanager"])
