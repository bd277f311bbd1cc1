"""Shared fixtures: risk parameters small enough to reason about by hand."""

from __future__ import annotations

import pytest

from monitor.instruments import RiskParams, parse_instruments

SMALL = {
    "assets": {
        "USDT": {"price": 1.0},
        "USDC": {"price_symbol": "USDC", "price": 1.0},
        "BTC": {"price_symbol": "BTC", "haircut": 0.1},
        "ETH": {"price_symbol": "ETH", "haircut": 0.2},
    },
    "instruments": {
        "BTC-PERP": {"underlying": "BTC", "brackets": [[0, 0.01], [1000, 0.02], [5000, 0.05]]},
        "ETH-PERP": {"underlying": "ETH", "brackets": [[0, 0.02], [2000, 0.04]]},
        "SOL-PERP": {"underlying": "SOL", "brackets": [[0, 0.05]]},
    },
}


@pytest.fixture
def small_params() -> RiskParams:
    return parse_instruments(SMALL, source="tests")
