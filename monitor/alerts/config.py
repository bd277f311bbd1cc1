"""Settings of the alert engine (``[alerts]``) and of the MQTT sink (``[mqtt]``).

Frozen, validated on construction, units in every name. The daemon's config
loader builds them from the TOML sections of the same names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from monitor.errors import ConfigError
from monitor.risk.levels import Thresholds

_WILDCARDS = ("+", "#")


def _positive(section: str, name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{section}.{name}: must be a finite number > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    """Status levels, hysteresis, flood control and the contagion / stale-price rules."""

    warning_ratio: float = 0.8
    critical_ratio: float = 0.9
    liquidatable_ratio: float = 1.0
    # A level clears only once the margin ratio is this far below its threshold.
    hysteresis: float = 0.05
    # Per account and kind at most one firing per interval (escalations and
    # resolutions always pass).
    min_interval_s: float = 60.0
    # Contagion fires for an account at WARNING or worse whose healthy notional at
    # risk is > 0 and at least this amount OR at least this share of its cross
    # notional (0 disables a condition; both 0: any healthy notional at risk).
    contagion_min_notional: float = 0.0
    contagion_min_share: float = 0.0
    # Once firing, contagion clears only below (1 - this) times the amount and
    # share above, and a victim counts as healthy until its loss exceeds
    # contagion_upnl_band of its notional (monitor.alerts.contagion).
    contagion_hysteresis: float = 0.2
    contagion_upnl_band: float = 0.002
    stale_price_s: float = 30.0

    def __post_init__(self) -> None:
        # Thresholds validates finiteness and the ascending order.
        self.thresholds()
        if not (math.isfinite(self.hysteresis) and 0.0 <= self.hysteresis < self.warning_ratio):
            raise ConfigError(
                f"alerts.hysteresis: must be >= 0 and below warning_ratio "
                f"({self.warning_ratio}), got {self.hysteresis!r}"
            )
        if not (math.isfinite(self.min_interval_s) and self.min_interval_s >= 0):
            raise ConfigError(f"alerts.min_interval_s: must be >= 0, got {self.min_interval_s!r}")
        if not (math.isfinite(self.contagion_min_notional) and self.contagion_min_notional >= 0):
            raise ConfigError(
                f"alerts.contagion_min_notional: must be >= 0, got {self.contagion_min_notional!r}"
            )
        if not 0.0 <= self.contagion_min_share <= 1.0:
            raise ConfigError(
                f"alerts.contagion_min_share: must lie in [0, 1], got {self.contagion_min_share!r}"
            )
        for name in ("contagion_hysteresis", "contagion_upnl_band"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value < 1.0):
                raise ConfigError(f"alerts.{name}: must lie in [0, 1), got {value!r}")
        _positive("alerts", "stale_price_s", self.stale_price_s)

    def thresholds(self) -> Thresholds:
        """The book's status thresholds; build the MarginBook with these."""
        return Thresholds(self.warning_ratio, self.critical_ratio, self.liquidatable_ratio)


@dataclass(frozen=True, slots=True)
class MqttConfig:
    """Broker connection, topics, burst handling and buffering of the MQTT sink."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 1883
    topic_prefix: str = "monitor"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    tls_ca_file: str | None = None
    # Client certificate (PEM) and its key, for brokers that require one; the key
    # may be left out when the certificate file holds it.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    client_id: str = "monitor"
    # Several instances sharing the prefix (scale-out): each publishes its summary
    # and online flag on its own topics and connects as <client_id>-<instance id>
    # (unless client_id names the instance already, e.g. set per pod).
    instance_topics: bool = False
    # Above this many alerts per second the sink publishes JSON arrays on
    # <prefix>/alerts/batch instead of one message per alert.
    publish_rate_limit_per_s: float = 2000.0
    batch_max_alerts: int = 1000
    # Alerts waiting for the broker (also while disconnected), bounded by count
    # and by memory (encoded alerts plus ~100 bytes each, in MiB); the oldest
    # beyond either are dropped and counted. A crash of 100,000 accounts
    # (~200,000 margin and contagion alerts of ~600 bytes: ~140 MiB) fits.
    queue_max: int = 500_000
    queue_max_mb: float = 256.0
    summary_interval_s: float = 5.0
    reconnect_max_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.host:
            raise ConfigError("mqtt.host: must not be empty")
        if not 0 < self.port < 65536:
            raise ConfigError(f"mqtt.port: must lie in 1..65535, got {self.port!r}")
        prefix = self.topic_prefix
        if not prefix or prefix.startswith("/") or prefix.endswith("/"):
            raise ConfigError(
                f"mqtt.topic_prefix: must be non-empty without a leading or trailing '/', "
                f"got {prefix!r}"
            )
        if any(w in prefix for w in _WILDCARDS):
            raise ConfigError(f"mqtt.topic_prefix: must not contain '+' or '#', got {prefix!r}")
        if not self.client_id:
            raise ConfigError("mqtt.client_id: must not be empty")
        if self.password is not None and self.username is None:
            raise ConfigError("mqtt.password: set mqtt.username too")
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            if getattr(self, name) is not None and not self.tls:
                raise ConfigError(f"mqtt.{name}: only used with mqtt.tls = true")
        if self.tls_key_file is not None and self.tls_cert_file is None:
            raise ConfigError("mqtt.tls_key_file: set mqtt.tls_cert_file (the certificate) too")
        _positive("mqtt", "publish_rate_limit_per_s", self.publish_rate_limit_per_s)
        _positive("mqtt", "summary_interval_s", self.summary_interval_s)
        _positive("mqtt", "reconnect_max_s", self.reconnect_max_s)
        if self.batch_max_alerts < 1:
            raise ConfigError(f"mqtt.batch_max_alerts: must be >= 1, got {self.batch_max_alerts}")
        if self.queue_max < 1:
            raise ConfigError(f"mqtt.queue_max: must be >= 1, got {self.queue_max}")
        _positive("mqtt", "queue_max_mb", self.queue_max_mb)
