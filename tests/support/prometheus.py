"""A real Prometheus server for tests, and readers of the text exposition format.

``PrometheusServer`` runs the ``prometheus`` binary (Debian package
``prometheus``) on a free loopback port with a given config and a fresh TSDB in
a work directory, and talks to its HTTP API. ``exposition`` turns a
``/metrics`` page into what the deploy tests check PromQL against: the series
names with their labels, the families with their types, and the values every
label takes.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.tansu import free_port


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, str]:
    """Status and body of a GET (an HTTP error status is returned, not raised)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read().decode()


class PrometheusServer:
    """One Prometheus on ``127.0.0.1:<port>``; ``config`` is its prometheus.yml."""

    def __init__(self, binary: str, workdir: Path, config: dict[str, Any]) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.config_path = workdir / "prometheus.yml"
        self.log = workdir / "prometheus.log"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited on start:\n{self.log_text()}")
            with contextlib.suppress(OSError):
                if http_get(f"{self.url}/-/ready", 1.0)[0] == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready in {timeout_s} s:\n{self.log_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """The JSON answer of ``/api/v1/<path>`` (``status`` is "success" or "error")."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        _, body = http_get(f"{self.url}/api/v1/{path}{query}")
        answer: dict[str, Any] = json.loads(body)
        return answer

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)

    def alerts(self) -> dict[str, list[dict[str, Any]]]:
        """Active alerts (pending or firing) by alert name."""
        answer = self.api("alerts")
        assert answer["status"] == "success", answer
        out: dict[str, list[dict[str, Any]]] = {}
        for a in answer["data"]["alerts"]:
            out.setdefault(a["labels"]["alertname"], []).append(a)
        return out


@dataclass(frozen=True)
class Exposition:
    """What one ``/metrics`` page exports: families with at least one sample, without
    prometheus_client's ``*_created`` timestamps (not part of any contract)."""

    series: dict[str, frozenset[str]]  # sample name -> label names
    families: dict[str, tuple[str, frozenset[str]]]  # family -> (type, label names)
    label_values: dict[str, set[str]]  # label -> every value seen


def exposition(text: str) -> Exposition:
    series: dict[str, set[str]] = {}
    families: dict[str, tuple[str, frozenset[str]]] = {}
    values: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        if not family.samples:
            continue  # a labelled metric no code has touched yet: Prometheus sees nothing
        if family.name.endswith("_created"):
            continue  # prometheus_client's creation time of a counter or histogram
        labels: set[str] = set()
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            series.setdefault(s.name, set()).update(s.labels)
            for k, v in s.labels.items():
                if k not in ("le", "quantile"):
                    values.setdefault(k, set()).add(v)
                    labels.add(k)
        name = f"{family.name}_total" if family.type == "counter" else family.name
        families[name] = (family.type, frozenset(labels))
    return Exposition({k: frozenset(v) for k, v in series.items()}, families, values)
