"""Helpers shared by the test suites (real brokers started on free ports)."""
