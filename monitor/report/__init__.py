"""The replay report: one self-contained HTML page with its plots embedded.

:func:`write_report` draws price paths, accounts by status, healthy notional
at risk over time, the margin-ratio distribution and the liquidation map at
the worst moment, and a table of the largest contagion events.
"""

from monitor.report.page import write_report

__all__ = ["write_report"]
