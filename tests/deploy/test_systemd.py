"""deploy/systemd/monitor.service: a sandboxed unit that runs the daemon."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.deploy.helpers import (
    K8S,
    README,
    SYSTEMD_TOML,
    SYSTEMD_UNIT,
    documented_memory_mb,
    duration_s,
    load_toml,
    load_yaml_all,
    memory_quantity_mb,
    require_tool,
)

EXEC_START = "/usr/local/bin/monitor run --config /etc/monitor/monitor.toml"


def unit() -> dict[str, dict[str, list[str]]]:
    """section -> key -> values (systemd allows a key more than once)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = None
    for raw in SYSTEMD_UNIT.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            section = m.group(1)
            out.setdefault(section, {})
            continue
        assert section is not None, f"key outside a section: {line}"
        assert "=" in line, f"not key=value: {line}"
        key, _, value = line.partition("=")
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def service(key: str) -> str:
    values = unit()["Service"].get(key)
    assert values, f"[Service] {key} is not set"
    return values[-1]


def test_the_unit_has_its_sections() -> None:
    assert set(unit()) == {"Unit", "Service", "Install"}
    assert unit()["Install"]["WantedBy"] == ["multi-user.target"]
    assert "network-online.target" in unit()["Unit"]["After"][0]


def test_it_runs_the_daemon_with_the_system_config() -> None:
    assert service("ExecStart") == EXEC_START
    assert service("Restart") == "on-failure"


def test_stop_leaves_time_to_checkpoint() -> None:
    assert duration_s(service("TimeoutStopSec")) >= 30
    assert service("KillSignal") == "SIGTERM"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("StateDirectory", "monitor"),
        ("CapabilityBoundingSet", ""),
    ],
)
def test_sandboxing(key: str, value: str) -> None:
    assert service(key) == value


def test_network_is_limited_to_ip_and_unix_sockets() -> None:
    families = set(service("RestrictAddressFamilies").split())
    assert families == {"AF_INET", "AF_INET6", "AF_UNIX"}


def test_the_state_directory_is_the_configured_state_dir() -> None:
    assert f"/var/lib/{service('StateDirectory')}" == load_toml(SYSTEMD_TOML)["state"]["dir"]


def test_the_readme_installs_the_host_config_where_the_unit_reads_it() -> None:
    config = EXEC_START.split("--config ", 1)[1]
    text = README.read_text(encoding="utf-8")
    assert f"install -m 0644 deploy/systemd/monitor.toml {config}" in text
    assert "install -m 0644 deploy/systemd/monitor.service /etc/systemd/system/" in text


def test_memory_limits_follow_the_measured_peak() -> None:
    peak = documented_memory_mb()["peak"]
    high = memory_quantity_mb(service("MemoryHigh"))
    hard = memory_quantity_mb(service("MemoryMax"))
    # Above MemoryHigh the kernel throttles the service: the peak must fit under it.
    assert peak < high < hard <= 1.5 * peak, (peak, high, hard)
    (sts,) = [d for d in load_yaml_all(K8S / "statefulset.yaml") if d["kind"] == "StatefulSet"]
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    assert hard == memory_quantity_mb(container["resources"]["limits"]["memory"])


def test_numba_can_compile_and_cache() -> None:
    # numba writes executable memory and, on a read-only /usr, needs a cache dir.
    assert unit()["Service"].get("MemoryDenyWriteExecute", ["no"])[-1] in {"no", "false", "0"}
    cache = f"/var/cache/{service('CacheDirectory')}"
    env = dict(v.split("=", 1) for v in unit()["Service"]["Environment"])
    assert env["NUMBA_CACHE_DIR"].startswith(cache + "/")


def verify_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart's binary replaced by a stub, since verify checks it exists."""
    stub = tmp_path / "monitor"
    stub.write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    stub.chmod(0o755)
    text = SYSTEMD_UNIT.read_text(encoding="utf-8")
    assert "ExecStart=/usr/local/bin/monitor " in text
    copy = tmp_path / SYSTEMD_UNIT.name
    copy.write_text(text.replace("=/usr/local/bin/monitor ", f"={stub} "), encoding="utf-8")
    return copy


def systemd_analyze() -> str:
    return require_tool("systemd-analyze")


def test_systemd_analyze_verify_reports_nothing(tmp_path: Path) -> None:
    exe = systemd_analyze()
    copy = verify_copy(tmp_path)
    result = subprocess.run(
        [exe, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    # Unknown keys and bad values are only warnings: any output is a finding.
    assert result.stderr.strip() == "" and result.stdout.strip() == "", result.stderr


def test_systemd_analyze_verify_notices_a_bad_key(tmp_path: Path) -> None:
    exe = systemd_analyze()
    copy = verify_copy(tmp_path)
    copy.write_text(
        copy.read_text(encoding="utf-8").replace("PrivateTmp=yes", "PrivateTemp=yes"),
        encoding="utf-8",
    )
    result = subprocess.run(
        [exe, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert "PrivateTemp" in result.stderr


def test_systemd_rates_the_sandbox_ok(tmp_path: Path) -> None:
    exe = systemd_analyze()
    copy = verify_copy(tmp_path)
    result = subprocess.run(
        [exe, "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert m, result.stdout + result.stderr
    assert float(m.group(1)) <= 2.5, f"exposure {m.group(1)}"
