"""Streaming, real-time liquidation monitor for cross-margin accounts."""

__version__ = "0.1.0"
