"""The daemon's configuration: one TOML file plus ``MONITOR_<SECTION>_<KEY>`` overrides.

Every section is a frozen dataclass; a section is built generically from its
dataclass fields, so the rules are the same everywhere: unknown keys are an
error naming the file and the key, values are type-checked against the field
annotations (an int is accepted where a float is expected, lists become
tuples), and units are in the key names (``snapshot_interval_s``).

The ``[alerts]``, ``[mqtt]`` and ``[market]`` sections are the dataclasses of
:mod:`monitor.alerts.config` and :mod:`monitor.cascade.config`; they are built
by the same generic code, without knowing their fields here.

Environment overrides win over the file: ``MONITOR_KAFKA_BOOTSTRAP_SERVERS``
sets ``[kafka] bootstrap_servers``. A variable naming a known section but an
unknown key is an error too. Values are read as TOML values
(``MONITOR_HTTP_PORT=9000``, ``MONITOR_MARKET_SHOCKS='[-0.1, -0.2]'``); for a
string field the raw text is taken as it is.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import socket
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from monitor.errors import ConfigError

ENV_PREFIX = "MONITOR_"
SECRET_KEYS = frozenset({"sasl_password", "password"})


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """Broker connection and client options (SASL/SSL passed through to aiokafka)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "monitor"
    group_id: str = "monitor"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    fetch_max_wait_ms: int = 10
    max_poll_interval_ms: int = 300_000
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_records: int = 10_000
    event_queue_max_messages: int = 100_000
    prices_start: Literal["beginning", "now"] = "beginning"

    def __post_init__(self) -> None:
        if not self.servers:
            raise ConfigError("kafka.bootstrap_servers: needs at least one host:port")
        for name in (
            "fetch_max_wait_ms",
            "max_poll_interval_ms",
            "session_timeout_ms",
            "max_poll_records",
            "event_queue_max_messages",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"kafka.{name}: must be > 0, got {getattr(self, name)}")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ConfigError("kafka.ssl_certfile and kafka.ssl_keyfile: set both or neither")
        if not 0 < self.heartbeat_interval_ms < self.session_timeout_ms:
            raise ConfigError("kafka.heartbeat_interval_ms: must be > 0 and < session_timeout_ms")

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]


@dataclass(frozen=True, slots=True)
class TopicsConfig:
    prices: str = "prices"
    account_events: str = "account-events"
    alerts: str = "alerts"
    dlq: str = "monitor-dlq"
    partials: str = "monitor-partials"


@dataclass(frozen=True, slots=True)
class HttpConfig:
    host: str = "0.0.0.0"
    port: int = 9464  # 0: any free port (tests)

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"http.port: must be in 0..65535, got {self.port}")


@dataclass(frozen=True, slots=True)
class StateConfig:
    dir: str = "state"
    snapshot_interval_s: float = 30.0
    close_retention_s: float = 7 * 86_400.0

    def __post_init__(self) -> None:
        if not self.dir:
            raise ConfigError("state.dir: must name a directory")
        if not self.snapshot_interval_s > 0:
            raise ConfigError(
                f"state.snapshot_interval_s: must be > 0, got {self.snapshot_interval_s}"
            )
        if not self.close_retention_s > 0:
            raise ConfigError(f"state.close_retention_s: must be > 0, got {self.close_retention_s}")


@dataclass(frozen=True, slots=True)
class HealthConfig:
    stall_after_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.stall_after_s > 0:
            raise ConfigError(f"health.stall_after_s: must be > 0, got {self.stall_after_s}")


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    """Which instance this process is, among those sharing one consumer group."""

    id: str = ""  # empty: the host name (stable for a Kubernetes StatefulSet pod)

    def __post_init__(self) -> None:
        if self.id and not all(c.isalnum() or c in "._-" for c in self.id):
            raise ConfigError(f"instance.id: use letters, digits, '.', '_' or '-', got {self.id!r}")

    @property
    def name(self) -> str:
        if self.id:
            return self.id
        host = socket.gethostname() or "monitor"
        return "".join(c if c.isalnum() or c in "._-" else "-" for c in host)


@dataclass(frozen=True, slots=True)
class InstrumentsConfig:
    file: str = ""  # empty: the instruments shipped with the package


# Sections owned by other packages: (section, module, class). Built generically.
_EXTERNAL: tuple[tuple[str, str, str], ...] = (
    ("alerts", "monitor.alerts.config", "AlertsConfig"),
    ("mqtt", "monitor.alerts.config", "MqttConfig"),
    ("market", "monitor.cascade.config", "MarketConfig"),
)


def _external(module: str, cls: str) -> type[Any] | None:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    t = getattr(mod, cls, None)
    return t if isinstance(t, type) and dataclasses.is_dataclass(t) else None


@dataclass(frozen=True)
class Config:
    """The effective configuration (file, then environment)."""

    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    state: StateConfig = field(default_factory=StateConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    instance: InstanceConfig = field(default_factory=InstanceConfig)
    instruments: InstrumentsConfig = field(default_factory=InstrumentsConfig)
    # Other packages' sections (None when that package is not installed).
    alerts: Any = None
    mqtt: Any = None
    market: Any = None
    source: str = "<defaults>"

    def section(self, name: str) -> Any:
        return getattr(self, name)

    def as_dict(self, *, redact: bool = True) -> dict[str, dict[str, Any]]:
        """Every section as plain values (passwords redacted unless asked otherwise)."""
        out: dict[str, dict[str, Any]] = {}
        for name in section_names():
            sec = getattr(self, name)
            if sec is None:
                continue
            table = {f.name: _plain(getattr(sec, f.name)) for f in dataclasses.fields(sec)}
            if redact:
                for k in SECRET_KEYS & table.keys():
                    if table[k]:
                        table[k] = "***"
            out[name] = table
        return out


_OWN: dict[str, type[Any]] = {
    "kafka": KafkaConfig,
    "topics": TopicsConfig,
    "http": HttpConfig,
    "state": StateConfig,
    "health": HealthConfig,
    "instance": InstanceConfig,
    "instruments": InstrumentsConfig,
}


def section_types() -> dict[str, type[Any] | None]:
    """Section name -> dataclass (None for a section whose package is missing)."""
    out: dict[str, type[Any] | None] = dict(_OWN)
    for name, module, cls in _EXTERNAL:
        out[name] = _external(module, cls)
    return out


def section_names() -> list[str]:
    return [*_OWN, *(name for name, _, _ in _EXTERNAL)]


def default_config_path() -> Path:
    """The documented default file shipped with the package (config/monitor.toml)."""
    return Path(str(resources.files("monitor") / "defaults" / "monitor.toml"))


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (default: the packaged default), apply ``MONITOR_*`` overrides
    from ``env`` (default: ``os.environ``), validate strictly."""
    p = Path(path) if path is not None else default_config_path()
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return build_config(data, source=str(p), env=os.environ if env is None else env)


def build_config(
    data: Mapping[str, Any], *, source: str = "<memory>", env: Mapping[str, str] | None = None
) -> Config:
    types_ = section_types()
    for name, value in data.items():
        if name not in types_:
            raise ConfigError(f"{source}: [{name}]: unknown section (known: {', '.join(types_)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {name}: expected a table [{name}]")
    tables: dict[str, dict[str, Any]] = {k: dict(v) for k, v in data.items()}
    origin: dict[tuple[str, str], str] = {}
    for var, raw in sorted((env or {}).items()):
        hit = _env_target(var, types_)
        if hit is None:
            if var.startswith(ENV_PREFIX):
                raise ConfigError(
                    f"{var}: names no section (MONITOR_<SECTION>_<KEY>; sections: "
                    f"{', '.join(types_)})"
                )
            continue
        sec, key = hit
        cls = types_[sec]
        if cls is None:
            raise ConfigError(f"{var}: section [{sec}] is not available in this build")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if key not in fields:
            raise ConfigError(f"{var}: unknown key `{key}` in [{sec}] (known: {', '.join(fields)})")
        tables.setdefault(sec, {})[key] = _env_value(raw, _hints(cls)[key])
        origin[(sec, key)] = var
    built: dict[str, Any] = {}
    for name, cls in types_.items():
        table = tables.get(name, {})
        if cls is None:
            if table:
                raise ConfigError(
                    f"{source}: [{name}]: this section is not available in this build"
                )
            continue
        built[name] = build_section(cls, table, source=source, section=name, origin=origin)
    return Config(**built, source=source)


def _env_target(var: str, types_: Mapping[str, object]) -> tuple[str, str] | None:
    if not var.startswith(ENV_PREFIX):
        return None
    rest = var[len(ENV_PREFIX) :].lower()
    for sec in types_:
        if rest.startswith(sec + "_") and len(rest) > len(sec) + 1:
            return sec, rest[len(sec) + 1 :]
    return None


def _env_value(raw: str, annotation: Any) -> Any:
    if _is_str(annotation):
        return raw
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # type-checked (and reported) by the section builder


def _is_str(annotation: Any) -> bool:
    if annotation is str:
        return True
    if typing.get_origin(annotation) is Literal:
        return all(isinstance(a, str) for a in typing.get_args(annotation))
    return False


def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build_section(
    cls: type[Any],
    table: Mapping[str, Any],
    *,
    source: str,
    section: str,
    origin: Mapping[tuple[str, str], str] | None = None,
) -> Any:
    """A frozen dataclass from a TOML table: unknown keys and ill-typed values are errors."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        where = (origin or {}).get((section, key)) or f"{source}: {section}.{key}"
        if key not in fields:
            raise ConfigError(f"{where}: unknown key (allowed in [{section}]: {', '.join(fields)})")
        kwargs[key] = coerce(value, hints[key], where)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: [{section}]: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: [{section}]: {exc}") from exc


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a type annotation; returns it converted (int -> float,
    list -> tuple, table -> dataclass). Raises :class:`ConfigError` naming ``where``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors: list[str] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: expected {_name(annotation)}, got {value!r}")
    if origin is Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        allowed = ", ".join(repr(a) for a in args)
        raise ConfigError(f"{where}: expected one of {allowed}, got {value!r}")
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            f = float(value)
            if math.isnan(f):
                raise ConfigError(f"{where}: expected a number, got nan")
            return f
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if annotation is Path:
        if isinstance(value, str):
            return Path(value)
        raise ConfigError(f"{where}: expected a path string, got {value!r}")
    if origin in (list, tuple, typing.Sequence, _abc_sequence()):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected an array, got {value!r}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(
                coerce(v, a, f"{where}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        out = [coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return out if origin is list else tuple(out)
    if origin in (dict, typing.Mapping, _abc_mapping()):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        kt, vt = args if args else (Any, Any)
        return {coerce(k, kt, f"{where}"): coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        sub = where.rsplit(": ", 1)
        src = sub[0] if len(sub) == 2 else where
        sec = sub[-1]
        return build_section(annotation, value, source=src, section=sec)
    if isinstance(annotation, type) and isinstance(value, annotation):
        return value
    raise ConfigError(f"{where}: expected {_name(annotation)}, got {value!r}")


def _abc_sequence() -> Any:
    import collections.abc

    return collections.abc.Sequence


def _abc_mapping() -> Any:
    import collections.abc

    return collections.abc.Mapping


def _name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, Path):
        return str(v)
    return v


def to_toml(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """Render plain section tables as TOML (used by ``monitor check-config``)."""
    lines: list[str] = []
    for name, table in tables.items():
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        for k, v in table.items():
            if v is None:
                lines.append(f"# {k} is not set")
            else:
                lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        inner = ", ".join(f"{_key(k)} = {_toml_value(x)}" for k, x in v.items() if x is not None)
        return "{ " + inner + " }" if inner else "{}"
    return _toml_value(str(v))


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(k)


__all__ = [
    "Config",
    "HealthConfig",
    "HttpConfig",
    "InstrumentsConfig",
    "KafkaConfig",
    "StateConfig",
    "TopicsConfig",
    "build_config",
    "build_section",
    "coerce",
    "default_config_path",
    "load_config",
    "section_types",
    "to_toml",
]
