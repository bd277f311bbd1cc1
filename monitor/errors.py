"""The one error root of the monitor and its few meaningful kinds.

Every message says what is wrong and where, so an operator can act on it.
"""


class MonitorError(Exception):
    """Root of every error the monitor raises on purpose."""


class ConfigError(MonitorError):
    """A configuration file or setting is invalid (names the file and key)."""


class InputError(MonitorError):
    """An input file cannot be read at all (missing, unreadable, unknown format)."""


class StateError(MonitorError):
    """Persisted state (a snapshot) is corrupt, partial or incompatible."""
