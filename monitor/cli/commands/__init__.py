"""One module per ``monitor`` sub-command (discovered by :mod:`monitor.cli`)."""
