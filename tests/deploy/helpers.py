"""Shared knowledge for the deploy tests: paths, loaders, the expressions the
deployment ships (rules, dashboard, Grafana rules), and a small PromQL scanner
that pulls metric and label names out of them and checks them against the
series a live monitor exports (tests/integration/test_prometheus_e2e.py)."""

from __future__ import annotations

import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = DEPLOY / "docker" / "Dockerfile.dockerignore"
MONITOR_TOML = DEPLOY / "monitor" / "monitor.toml"
PROM_DIR = DEPLOY / "prometheus"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
RULES = PROM_DIR / "rules" / "monitor.rules.yml"
RULE_TESTS = PROM_DIR / "tests" / "monitor.rules.test.yml"
ALERTMANAGER = DEPLOY / "alertmanager" / "alertmanager.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "monitor.json"
GRAFANA_DATASOURCE = GRAFANA / "provisioning" / "datasources" / "prometheus.yaml"
GRAFANA_DASHBOARDS = GRAFANA / "provisioning" / "dashboards" / "monitor.yaml"
GRAFANA_ALERTS = GRAFANA / "provisioning" / "alerting" / "monitor-alerts.yaml"
K8S = DEPLOY / "k8s"
SYSTEMD_UNIT = DEPLOY / "systemd" / "monitor.service"
SYSTEMD_TOML = DEPLOY / "systemd" / "monitor.toml"
README = DEPLOY / "README.md"
TOPICS_SCRIPT = DEPLOY / "kafka" / "create-topics.sh"

# The daemon's config schema: section -> keys.
CONFIG_SCHEMA: dict[str, set[str]] = {
    "kafka": {
        "bootstrap_servers",
        "client_id",
        "group_id",
        "security_protocol",
        "sasl_mechanism",
        "sasl_username",
        "sasl_password",
        "ssl_cafile",
    },
    "topics": {"prices", "account_events", "alerts", "dlq", "partials"},
    "http": {"host", "port"},
    "state": {"dir", "snapshot_interval_s"},
    "mqtt": {
        "enabled",
        "host",
        "port",
        "topic_prefix",
        "username",
        "password",
        "tls",
        "publish_rate_limit_per_s",
        "batch_max_alerts",
    },
    "alerts": {
        "warning_ratio",
        "critical_ratio",
        "liquidatable_ratio",
        "hysteresis",
        "min_interval_s",
        "contagion_min_notional",
        "contagion_min_share",
        "stale_price_s",
    },
    "health": {"stall_after_s"},
    "market": {
        "map_interval_s",
        "cascade_interval_s",
        "shocks",
        "cascade_amplification_threshold",
        "cascade_notional_threshold",
    },
    "instruments": {"file"},
}
# Keys a deployment sets only when it needs them (credentials, TLS).
OPTIONAL_KEYS = {
    ("kafka", "sasl_mechanism"),
    ("kafka", "sasl_username"),
    ("kafka", "sasl_password"),
    ("kafka", "ssl_cafile"),
    ("mqtt", "username"),
    ("mqtt", "password"),
}

# What the rules and dashboards may read besides the monitor's own series: the
# labels Prometheus attaches to every scraped series, and its own `up`. The
# monitor's series themselves come from a live /metrics scrape
# (tests/integration/test_prometheus_e2e.py), never from a list kept by hand.
TARGET_LABELS = frozenset({"instance", "job"})
PROMETHEUS_SERIES = {"up": TARGET_LABELS}

# series name -> label names it carries
Contract = dict[str, frozenset[str]]


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_yaml_all(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_toml(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        return tomllib.load(f)


def require_tool(name: str, *extra_paths: str) -> str:
    """The path of a tool the test suite drives for real; fail (never skip) without it."""
    found = shutil.which(name) or next((p for p in extra_paths if Path(p).is_file()), None)
    if found is None:
        pytest.fail(
            f"`{name}` is not installed: `make test` installs it (make system-deps), "
            f"or install the Debian package that provides it"
        )
    return found


def dashboard() -> dict[str, Any]:
    import json

    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def all_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in board["panels"]:
        out.append(p)
        out += p.get("panels", [])  # collapsed rows keep their panels inside
    return out


def content_panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(board) if p["type"] != "row"]


def dashboard_exprs(board: dict[str, Any]) -> list[str]:
    """The PromQL of every panel target."""
    return [t["expr"] for p in content_panels(board) for t in p["targets"]]


def variable_exprs(board: dict[str, Any]) -> list[str]:
    """The series selectors of the dashboard's query variables (``label_values(S, l)``)."""
    out = []
    for v in board["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", v["query"]["query"])
            assert m, v["query"]
            out.append(m.group(1))
    return out


def grafana_rules() -> list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]]:
    """(rule, query model, threshold model) of every Grafana-managed rule."""
    out = []
    for group in load_yaml(GRAFANA_ALERTS)["groups"]:
        for rule in group["rules"]:
            data = {d["refId"]: d for d in rule["data"]}
            cond = data[rule["condition"]]["model"]
            assert cond["type"] == "threshold", rule["title"]
            query = data[cond["expression"]]
            out.append((rule, query["model"] | {"datasourceUid": query["datasourceUid"]}, cond))
    return out


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "alert" in r]


def recording_rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(RULES)["groups"] for r in g["rules"] if "record" in r]


def norm(expr: str) -> str:
    """An expression with its whitespace normalised, for comparisons."""
    return " ".join(expr.split())


# --- PromQL scanning --------------------------------------------------------------

_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*\"\"")
_NUMBER = re.compile(r"(?<![A-Za-z0-9_:.])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan", "start", "end"}
GRAFANA_INTERVALS = re.compile(
    r"\$__(?:rate_interval|interval|range)\b|\$\{__(?:rate_interval|interval|range)\}"
)
GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def substitute_grafana_variables(expr: str) -> str:
    """A dashboard expression made plain PromQL: intervals become 5m, variables x."""
    expr = GRAFANA_INTERVALS.sub("5m", expr)
    return GRAFANA_VARIABLE.sub("x", expr)


def grafana_variables(expr: str) -> set[str]:
    expr = GRAFANA_INTERVALS.sub("", expr)
    return {a or b for a, b in GRAFANA_VARIABLE.findall(expr)}


def _blank_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression reads (functions, keywords and labels excluded)."""
    s = _blank_strings(substitute_grafana_variables(expr))
    s = _SELECTOR.sub(lambda m: f" {m.group(1) or ''} ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = _GROUPING.sub(" ", s)
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    s = _NUMBER.sub(" ", s)
    names = set()
    for m in _IDENT.finditer(s):
        if s[m.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if m.group(0).lower() in _KEYWORDS:
            continue
        names.add(m.group(0))
    return names


def selector_labels(expr: str) -> list[tuple[str | None, set[str]]]:
    """(metric name or None, label names matched) for every selector with matchers."""
    s = _blank_strings(substitute_grafana_variables(expr))
    return [
        (m.group(1), {name for name, _ in _MATCHER.findall(m.group(2))})
        for m in _SELECTOR.finditer(s)
    ]


def matcher_values(expr: str) -> list[tuple[str, str]]:
    """(label, value) for every equality matcher, values unquoted."""
    return re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*=\s*\"((?:\\.|[^\"\\])*)\"", expr)


def grouping_labels(expr: str) -> set[str]:
    """Labels named in by/without/on/ignoring/group_left/group_right clauses."""
    s = _blank_strings(expr)
    out: set[str] = set()
    for _, inner in _GROUPING.findall(s):
        out |= {x.strip() for x in inner.split(",") if x.strip()}
    return out


def recorded_series(known: Contract) -> Contract:
    """Recording rule outputs, usable by other expressions (labels: those of the input)."""
    out = {}
    for r in recording_rules():
        labels: frozenset[str] = frozenset({"job"})
        for name in metric_names(r["expr"]):
            labels |= known.get(name, frozenset()) - {"instance"}
        out[r["record"]] = labels
    return out


def check_expression(
    expr: str, known: Contract, label_values: dict[str, set[str]] | None = None
) -> list[str]:
    """Problems of one expression against the series ``known`` (name -> labels) and,
    for the labels in ``label_values``, the values they take (empty when none)."""
    values = label_values or {}
    problems = []
    names = metric_names(expr)
    if not names:
        problems.append(f"reads no metric: {expr}")
    for name in sorted(names - known.keys()):
        problems.append(f"unknown metric {name!r} in: {expr}")
    used_labels: set[str] = set()
    for name, labels in selector_labels(expr):
        if name is None:
            problems.append(f"selector without a metric name in: {expr}")
            continue
        allowed = known.get(name, frozenset())
        for label in sorted(labels - allowed):
            problems.append(f"{name} has no label {label!r} in: {expr}")
        used_labels |= labels
    allowed_anywhere = set().union(*(known.get(n, frozenset()) for n in names)) if names else set()
    for label in sorted(grouping_labels(expr) - allowed_anywhere):
        problems.append(f"grouping by unknown label {label!r} in: {expr}")
    for label, value in matcher_values(expr):
        if label in values and value not in values[label] and "$" not in value:
            problems.append(f"{label}={value!r} is not a value of {label} in: {expr}")
    return problems


def duration_s(text: str) -> float:
    """A Prometheus/Grafana duration ("1m30s", "0s", "15m") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(a) * units[b] for a, b in parts)


def split_host_port(address: str) -> tuple[str, int]:
    address = re.sub(r"^[a-z]+://", "", address).split("/", 1)[0]
    host, _, port = address.rpartition(":")
    return host, int(port)


def documented_memory_mb() -> dict[str, float]:
    """The measured memory figures of deploy/README.md's Sizing table: ``steady``
    (process RSS of a 1M-account book) and ``peak`` (a checkpoint and the market
    jobs at once), in MB."""
    text = README.read_text(encoding="utf-8")
    steady = re.search(r"^\| steady process RSS \| (\d+) MB", text, re.M)
    peak = re.search(r"^\| peak RSS, [^|]*\| (\d+) MB", text, re.M)
    assert steady and peak, "deploy/README.md has no Sizing table with the RSS figures"
    return {"steady": float(steady.group(1)), "peak": float(peak.group(1))}


def memory_quantity_mb(q: str | int) -> float:
    """A Kubernetes quantity (``3Gi``) or a systemd size (``2816M``, ``3G``) in MB
    (2**20 bytes, as the bench reports RSS)."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 2**10, "M": 2**20, "G": 2**30}
    q = str(q)
    for suffix, factor in units.items():
        if q.endswith(suffix) and q[: -len(suffix)].replace(".", "", 1).isdigit():
            return float(q[: -len(suffix)]) * factor / 2**20
    return float(q) / 2**20


def readme_anchors() -> set[str]:
    """GitHub-style anchors of every heading of deploy/README.md."""
    anchors = set()
    for line in README.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^#{1,6}\s+(.*)$", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


# --- Dockerfile ---------------------------------------------------------------------


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[int, str, str]]:
    """(stage index, INSTRUCTION, arguments) with continuation lines joined.

    Stage -1 holds the ARGs before the first FROM.
    """
    out: list[tuple[int, str, str]] = []
    stage = -1
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if not line:
            continue
        instr, _, args = line.partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            stage += 1
        out.append((stage, instr, args.strip()))
    return out


def final_stage(instructions: list[tuple[int, str, str]]) -> list[tuple[str, str]]:
    last = max(s for s, _, _ in instructions)
    return [(i, a) for s, i, a in instructions if s == last]


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form instruction (CMD, ENTRYPOINT, HEALTHCHECK CMD)."""
    import json

    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(x, str) for x in value), args
    return value


def image_command() -> list[str]:
    """ENTRYPOINT + CMD of the final stage: what `docker run IMAGE` executes."""
    stage = dict(final_stage(dockerfile_instructions()))
    return exec_form(stage["ENTRYPOINT"]) + exec_form(stage["CMD"])
