"""Risk math: levels, liquidation prices, contagion attribution, reports."""
