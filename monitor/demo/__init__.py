"""The demo: real crashes (shipped recordings) replayed against deterministic
synthetic cross-margin books (:mod:`~monitor.demo.book`), as
:mod:`~monitor.demo.scenarios` describes; :mod:`~monitor.demo.run` runs them."""

from monitor.demo.scenarios import SCENARIOS, Scenario

__all__ = ["SCENARIOS", "Scenario"]
