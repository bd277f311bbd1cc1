"""`monitor run` as a real subprocess: SIGKILL mid-stream, restart, SIGTERM.

The final book (read back from the snapshot the clean stop writes) must equal a
from-scratch evaluation of every record produced: no update lost, none
applied twice (a replay from before the state it is applied to would show up
as stale rejections in the DLQ, and there are none).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from monitor.checkpoint import restore
from monitor.checkpoint.statedir import StateDir
from monitor.errors import StateError
from monitor.instruments import load_instruments
from tests.support.daemon_proc import Proc, get, metric, wait_until
from tests.support.tansu import (
    TansuBroker,
    Topics,
    Workload,
    assert_same_book,
    consume_all,
    create_topics,
    free_port,
    make_workload,
    produce,
    reference_book,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
PARTITIONS = 3
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as b:
        yield b


def write_config(path: Path, bootstrap: str, t: Topics, state: Path, port: int) -> Path:
    path.write_text(
        f"""
[kafka]
bootstrap_servers = "{bootstrap}"
group_id = "{t.group}"
session_timeout_ms = 6000
heartbeat_interval_ms = 500

[topics]
prices = "{t.prices}"
account_events = "{t.account_events}"
alerts = "{t.alerts}"
dlq = "{t.dlq}"
partials = "{t.partials}"

[http]
host = "127.0.0.1"
port = {port}

[state]
dir = "{state}"
snapshot_interval_s = 0.3

[instance]
id = "test-0"
"""
    )
    return path


def split(work: Workload, frac: float) -> tuple[Workload, Workload]:
    p, e = int(len(work.prices) * frac), int(len(work.events) * frac)
    return Workload(work.prices[:p], work.events[:e]), Workload(work.prices[p:], work.events[e:])


async def test_sigkill_mid_stream_then_restart_loses_nothing_and_applies_nothing_twice(
    broker: TansuBroker, tmp_path: Path
) -> None:
    t = Topics.fresh()
    await create_topics(broker.bootstrap, t.all(), partitions=PARTITIONS)
    state = tmp_path / "state"
    port = free_port()
    cfg = write_config(tmp_path / "monitor.toml", broker.bootstrap, t, state, port)
    work = make_workload(accounts=80, ticks=3000, events=6000, seed=11)
    first, rest = split(work, 0.4)
    second, third = split(rest, 0.5)

    # Checkpoints far enough apart that the kill lands between two of them.
    cfg.write_text(
        cfg.read_text().replace("snapshot_interval_s = 0.3", "snapshot_interval_s = 2.0")
    )
    events_topic = f'topic="{t.account_events}"'

    def durable() -> int:
        try:
            snap = StateDir(state, "test-0").read_union(t.account_events)
        except StateError:
            return 0
        return sum(o for (topic, _), o in snap.offsets.items() if topic == t.account_events)

    async def applied(port_: int) -> int:
        status, text = await get(port_, "/metrics")
        if status != 200:
            return -1
        head = "monitor_messages_applied_total{"
        line = [x for x in text.splitlines() if x.startswith(head) and events_topic in x]
        return int(float(line[0].split()[-1])) if line else 0

    proc = Proc(cfg, tmp_path / "run1.log", port)
    try:
        await produce(broker.bootstrap, t.prices, first.prices, partitions=PARTITIONS)
        await produce(broker.bootstrap, t.account_events, first.events, partitions=PARTITIONS)

        async def checkpointed() -> bool:
            return durable() > 0  # a snapshot that already holds account events

        await wait_until(checkpointed, 40, "a checkpoint holding account events")
        # More input; the daemon is killed once it has applied some of it beyond its
        # last snapshot (that work is lost with the process and must be redone).
        await produce(broker.bootstrap, t.account_events, second.events, partitions=PARTITIONS)
        await produce(broker.bootstrap, t.prices, second.prices, partitions=PARTITIONS)

        async def ahead_of_snapshot() -> bool:
            return await applied(port) > durable()

        await wait_until(ahead_of_snapshot, 20, "work applied beyond the last snapshot")
        applied_at_kill = await applied(port)
        proc.signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        proc.kill()
    resumed_from = durable()
    assert 0 < resumed_from < applied_at_kill  # killed mid-stream, between checkpoints

    await produce(broker.bootstrap, t.prices, third.prices, partitions=PARTITIONS)
    await produce(broker.bootstrap, t.account_events, third.events, partitions=PARTITIONS)

    proc = Proc(cfg, tmp_path / "run2.log", port)
    try:

        async def caught_up() -> bool:
            status, text = await get(port, "/metrics")
            if status != 200 or metric(text, "monitor_ready") != 1.0:
                return False
            return (
                metric(text, "monitor_consumer_lag") == 0
                and metric(text, "monitor_queue_depth") == 0
            )

        await wait_until(caught_up, 60, "the restarted daemon to catch up")
        # Applied exactly once from the snapshot on: the records after its offsets.
        assert await applied(port) == len(work.events) - resumed_from
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "run2.log").read_text()[-3000:]
    finally:
        proc.kill()

    snap = StateDir(state, "test-0").read_union(t.account_events)
    produced = {t.prices: len(work.prices), t.account_events: len(work.events)}
    for topic, n in produced.items():
        assert sum(o for (tp, _), o in snap.offsets.items() if tp == topic) == n
    params = load_instruments()
    assert_same_book(restore(snap, params), reference_book(params, work)[0])
    # Nothing was rejected: a replay from before the state it lands on would be stale.
    assert await consume_all(broker.bootstrap, t.dlq, 1, timeout_s=1.0) == []
    log2 = (tmp_path / "run2.log").read_text()
    assert '"event": "prices loaded"' in log2
    assert '"from_beginning": []' in log2  # resumed every partition from its snapshot
    assert '"reason": "shutdown"' in log2


async def test_sigterm_checkpoints_commits_and_exits_zero(
    broker: TansuBroker, tmp_path: Path
) -> None:
    t = Topics.fresh()
    await create_topics(broker.bootstrap, t.all(), partitions=PARTITIONS)
    state = tmp_path / "state"
    port = free_port()
    cfg = write_config(tmp_path / "monitor.toml", broker.bootstrap, t, state, port)
    # Long interval: the snapshot and the commit checked below come from the stop.
    cfg.write_text(
        cfg.read_text().replace("snapshot_interval_s = 0.3", "snapshot_interval_s = 600")
    )
    work = make_workload(accounts=20, ticks=100, events=200, seed=5)
    await produce(broker.bootstrap, t.prices, work.prices, partitions=PARTITIONS)
    await produce(broker.bootstrap, t.account_events, work.events, partitions=PARTITIONS)
    proc = Proc(cfg, tmp_path / "run.log", port)
    try:

        async def all_fetched() -> bool:
            status, text = await get(port, "/metrics")
            return (
                status == 200
                and metric(text, "monitor_ready") == 1.0
                and metric(text, "monitor_messages_consumed_total")
                == len(work.prices) + len(work.events)
            )

        await wait_until(all_fetched, 40, "everything consumed")
        assert not list(state.glob("**/*.snapshot"))
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
    snap = StateDir(state, "test-0").read_union(t.account_events)
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=t.group)
    await consumer.start()
    try:
        for (topic, part), offset in snap.offsets.items():
            if topic == t.account_events:
                assert await consumer.committed(TopicPartition(topic, part)) == offset
        assert sum(o for (tp, _), o in snap.offsets.items() if tp == t.account_events) == len(
            work.events
        )
    finally:
        await consumer.stop()
    log = (tmp_path / "run.log").read_text()
    assert '"event": "stopping"' in log and '"event": "stopped"' in log
