"""Checks of the deploy material in deploy/ (Docker, Compose, Kubernetes, systemd,
Prometheus, Alertmanager, Grafana)."""
