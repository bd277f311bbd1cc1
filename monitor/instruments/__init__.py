"""Risk parameters: instruments with tiered brackets, collateral assets."""

from monitor.instruments.load import load_instruments, parse_instruments
from monitor.instruments.model import Asset, Bracket, Instrument, RiskParams

__all__ = [
    "Asset",
    "Bracket",
    "Instrument",
    "RiskParams",
    "load_instruments",
    "parse_instruments",
]
