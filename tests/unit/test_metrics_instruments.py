"""The monitor's own counters: labelled series exist at zero before first use."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from monitor.events.decode import RejectReason
from monitor.metrics.instruments import Metrics


def samples(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in registry.collect()
        for s in family.samples
        if s.name == name
    }


def test_dlq_counts_exist_at_zero_for_every_reason() -> None:
    reg = CollectorRegistry()
    Metrics(reg)
    got = samples(reg, "monitor_dlq_messages_total")
    assert got == {(("reason", str(r)),): 0.0 for r in RejectReason}


def test_each_input_topic_gets_a_zero_rejection_count_per_reason_when_named() -> None:
    reg = CollectorRegistry()
    m = Metrics(reg)
    assert samples(reg, "monitor_messages_rejected_total") == {}
    m.consumed.labels(topic="prices")
    m.consumed.labels("account-events")  # positional works the same
    m.consumed.labels(topic="prices")  # naming a topic again adds nothing
    m.reject("prices", RejectReason.STALE, 3)
    got = samples(reg, "monitor_messages_rejected_total")
    want = {
        (("reason", str(r)), ("topic", t)): 3.0 if (t, r) == ("prices", RejectReason.STALE) else 0.0
        for t in ("prices", "account-events")
        for r in RejectReason
    }
    assert got == want
    # The consumed counter itself still counts per topic.
    m.consumed.labels(topic="prices").inc(2)
    assert samples(reg, "monitor_messages_consumed_total") == {
        (("topic", "prices"),): 2.0,
        (("topic", "account-events"),): 0.0,
    }
