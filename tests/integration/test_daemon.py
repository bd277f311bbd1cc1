"""The daemon against a real broker, in-process: book, DLQ, metrics, health, checkpoints."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from monitor.checkpoint.statedir import StateDir
from monitor.config import Config, build_config
from monitor.daemon import Daemon
from monitor.instruments import load_instruments
from tests.support.tansu import (
    TansuBroker,
    Topics,
    Workload,
    assert_same_book,
    consume_all,
    create_topics,
    make_workload,
    produce,
    reference_book,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]
PARTITIONS = 3


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as b:
        yield b


@pytest.fixture
async def topics(broker: TansuBroker) -> Topics:
    t = Topics.fresh()
    await create_topics(broker.bootstrap, t.all(), partitions=PARTITIONS)
    return t


def daemon_config(bootstrap: str, t: Topics, state_dir: Path, **over: Any) -> Config:
    data: dict[str, dict[str, Any]] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": t.group,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 500,
        },
        "topics": {
            "prices": t.prices,
            "account_events": t.account_events,
            "alerts": t.alerts,
            "dlq": t.dlq,
            "partials": t.partials,
        },
        "http": {"host": "127.0.0.1", "port": 0},
        "state": {"dir": str(state_dir), "snapshot_interval_s": 1.0},
        "health": {"stall_after_s": 2.0},
        "instance": {"id": "test-0"},
    }
    for section, values in over.items():
        data.setdefault(section, {}).update(values)
    return build_config(data, source="test", env={})


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


async def wait_for_true(pred: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred() and time.monotonic() < deadline:  # noqa: ASYNC110 - polls the daemon
        await asyncio.sleep(0.05)


async def publish(bootstrap: str, t: Topics, work: Workload) -> None:
    await produce(bootstrap, t.prices, work.prices, partitions=PARTITIONS)
    await produce(bootstrap, t.account_events, work.events, partitions=PARTITIONS)


async def wait_applied(daemon: Daemon, t: Topics, work: Workload, timeout_s: float = 30) -> None:
    """Until the daemon's next offsets cover every produced record."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = {
            topic: sum(o for tp, o in daemon.offsets.items() if tp.topic == topic)
            for topic in (t.prices, t.account_events)
        }
        if done[t.prices] >= len(work.prices) and done[t.account_events] >= len(work.events):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not applied in time: {daemon.offsets}")


@pytest.fixture
async def running(
    broker: TansuBroker, topics: Topics, tmp_path: Path
) -> AsyncIterator[tuple[Daemon, asyncio.Task[int]]]:
    daemon = Daemon(
        daemon_config(broker.bootstrap, topics, tmp_path / "state"),
        registry=CollectorRegistry(),
        install_signal_handlers=False,
    )
    task = asyncio.create_task(daemon.run(), name="daemon-under-test")
    yield daemon, task
    daemon.request_stop()
    await asyncio.wait_for(task, 30)


async def test_the_book_equals_a_from_scratch_evaluation_and_bad_input_goes_to_the_dlq(
    broker: TansuBroker, topics: Topics, running: tuple[Daemon, asyncio.Task[int]]
) -> None:
    daemon, _ = running
    work = make_workload(accounts=40, ticks=300, events=400, bad=True)
    await publish(broker.bootstrap, topics, work)
    await asyncio.wait_for(daemon.ready.wait(), 30)
    await wait_applied(daemon, topics, work)

    want, reasons = reference_book(load_instruments(), work)
    assert_same_book(daemon.engine.book, want)

    n_bad = sum(reasons.values())
    dlq = await consume_all(broker.bootstrap, topics.dlq, n_bad)
    assert len(dlq) == n_bad
    got_reasons: dict[str, int] = {}
    for rec in dlq:
        h = dict(rec.headers)
        assert set(h) == {"reason", "detail", "source_topic", "partition", "offset"}
        got_reasons[h["reason"].decode()] = got_reasons.get(h["reason"].decode(), 0) + 1
        src = work.prices if h["source_topic"].decode() == topics.prices else work.events
        assert (rec.key, rec.value) in src  # original key and value
    assert got_reasons == reasons

    status, body = await http_get(daemon.http.port, "/metrics")
    assert status == 200
    text = body.decode()
    assert (
        f'monitor_messages_consumed_total{{topic="{topics.prices}"}} {len(work.prices)}.0' in text
    )
    for reason, n in reasons.items():
        assert f'monitor_dlq_messages_total{{reason="{reason}"}} {n}.0' in text
    assert 'monitor_accounts{status="healthy"}' in text
    assert "monitor_tick_to_evaluation_seconds_bucket" in text
    assert 'monitor_price_staleness_seconds{symbol="BTC-PERP"}' in text
    assert 'monitor_queue_depth{queue="account_events"}' in text
    assert "monitor_ready 1.0" in text
    types = [line for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(types) == len(set(types)), "a metric family is exported twice"

    assert (await http_get(daemon.http.port, "/healthz"))[0] == 200
    assert (await http_get(daemon.http.port, "/readyz"))[0] == 200

    # Every account at WARNING or worse has a firing margin alert, keyed by account.
    book = daemon.engine.book
    at_risk = {book.account_ids[a] for a in range(book.n_accounts) if book.status[a] > 0}
    assert at_risk, "the workload is meant to put some accounts at risk"
    await daemon.checkpoint("test")  # flushes the alert sink
    records = await consume_all(broker.bootstrap, topics.alerts, 10**6, timeout_s=2.0)
    firing = set()
    for rec in records:
        alert = orjson.loads(rec.value)
        assert rec.key == alert["account"].encode()
        if alert["kind"] == "margin" and alert["state"] == "firing":
            firing.add(alert["account"])
    assert at_risk <= firing

    # Closes are remembered for the staleness checks until [state] close_retention_s
    # (event time) has passed them: a checkpoint forgets the older ones.
    closes = book.remembered_closes
    assert closes > 0  # the workload closes positions
    state = dataclasses.replace(daemon.config.state, close_retention_s=0.2)
    daemon.config = dataclasses.replace(daemon.config, state=state)
    assert await daemon.checkpoint("test")
    assert book.remembered_closes < closes
    assert_same_book(daemon.engine.book, want)  # forgetting closes changes no position


async def test_a_full_event_queue_pauses_the_partitions_and_drops_nothing(
    broker: TansuBroker, topics: Topics, tmp_path: Path
) -> None:
    daemon = Daemon(
        daemon_config(broker.bootstrap, topics, tmp_path / "state"),
        registry=CollectorRegistry(),
        install_signal_handlers=False,
    )
    daemon.event_queue.high_water, daemon.event_queue.low_water = 20, 5
    work = make_workload(accounts=30, ticks=100, events=600, seed=9)
    await publish(broker.bootstrap, topics, work)
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 30)
        await wait_applied(daemon, topics, work)
        assert daemon.events is not None and daemon.events.pauses > 0
        assert_same_book(daemon.engine.book, reference_book(load_instruments(), work)[0])
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


async def test_a_clean_stop_checkpoints_commits_and_returns_zero(
    broker: TansuBroker, topics: Topics, tmp_path: Path
) -> None:
    cfg = daemon_config(
        broker.bootstrap, topics, tmp_path / "state", state={"snapshot_interval_s": 60.0}
    )
    daemon = Daemon(cfg, registry=CollectorRegistry(), install_signal_handlers=False)
    task = asyncio.create_task(daemon.run())
    work = make_workload(accounts=10, ticks=50, events=80)
    await publish(broker.bootstrap, topics, work)
    await asyncio.wait_for(daemon.ready.wait(), 30)
    await wait_applied(daemon, topics, work)
    offsets = dict(daemon.offsets)
    daemon.request_stop()
    assert await asyncio.wait_for(task, 30) == 0

    state = StateDir(tmp_path / "state", "test-0").read_union(topics.account_events)
    assert state.offsets == {(tp.topic, tp.partition): o for tp, o in offsets.items()}
    assert state.n_accounts == 10
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=topics.group)
    await consumer.start()
    try:
        for tp, o in offsets.items():
            if tp.topic == topics.account_events:
                assert await consumer.committed(TopicPartition(tp.topic, tp.partition)) == o
    finally:
        await consumer.stop()


async def test_a_corrupt_snapshot_is_set_aside_and_the_book_rebuilt(
    broker: TansuBroker, topics: Topics, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    sd = StateDir(state_dir, "test-0")
    bad = b"MONSNAP\n" + b"\x00" * 100
    for store in (sd.prices_store(), sd.partition_store(topics.account_events, 1)):
        store.dir.mkdir(parents=True)
        store.path.write_bytes(bad)
    work = make_workload(accounts=8, ticks=30, events=40, seed=3)
    await publish(broker.bootstrap, topics, work)
    daemon = Daemon(
        daemon_config(broker.bootstrap, topics, state_dir),
        registry=CollectorRegistry(),
        install_signal_handlers=False,
    )
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 30)
        await wait_applied(daemon, topics, work)
        assert_same_book(daemon.engine.book, reference_book(load_instruments(), work)[0])
        aside = sorted(p.name.split(".")[0] for p in state_dir.glob("**/*.corrupt"))
        assert aside == ["1", "prices"]
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


async def test_health_turns_unavailable_while_the_broker_is_down(tmp_path: Path) -> None:
    broker = TansuBroker()
    broker.start()
    try:
        t = Topics.fresh()
        await create_topics(broker.bootstrap, t.all(), partitions=1)
        daemon = Daemon(
            daemon_config(broker.bootstrap, t, tmp_path / "state"),
            registry=CollectorRegistry(),
            install_signal_handlers=False,
        )
        task = asyncio.create_task(daemon.run())
        await asyncio.wait_for(daemon.ready.wait(), 30)
        assert (await http_get(daemon.http.port, "/healthz"))[0] == 200
        broker.stop()
        deadline = time.monotonic() + 20
        status, body = 200, b""
        while time.monotonic() < deadline and status == 200:
            await asyncio.sleep(0.2)
            status, body = await http_get(daemon.http.port, "/healthz")
        assert status == 503
        reason = orjson.loads(body)["reason"]
        assert "broker unreachable" in reason or "no successful poll" in reason
        _, metrics = await http_get(daemon.http.port, "/metrics")
        assert b"monitor_healthy 0.0" in metrics
        daemon.request_stop()
        await asyncio.wait_for(task, 40)
    finally:
        broker.stop()


async def test_two_instances_in_one_group_split_the_accounts_between_them(
    broker: TansuBroker, topics: Topics, tmp_path: Path
) -> None:
    work = make_workload(accounts=40, ticks=100, events=300, seed=4)
    await publish(broker.bootstrap, topics, work)
    market = {"map_interval_s": 0.3, "cascade_interval_s": 0.3,
              "cascade_notional_threshold": 1.0, "shocks": ["BTC=-10%"]}  # fmt: skip
    first = Daemon(
        daemon_config(
            broker.bootstrap, topics, tmp_path / "a", market=market, instance={"id": "test-a"}
        ),
        registry=CollectorRegistry(),
        install_signal_handlers=False,
    )
    t1 = asyncio.create_task(first.run())
    second: Daemon | None = None
    t2: asyncio.Task[int] | None = None
    try:
        await asyncio.wait_for(first.ready.wait(), 30)
        await wait_applied(first, topics, work)
        assert first.engine.book.n_accounts == 40
        # A second instance joins: the partitions are shared out, the first keeps
        # only the accounts of the partitions it still owns.
        second = Daemon(
            daemon_config(
                broker.bootstrap, topics, tmp_path / "b", market=market, instance={"id": "test-b"}
            ),
            registry=CollectorRegistry(),
            install_signal_handlers=False,
        )
        t2 = asyncio.create_task(second.run())
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            owned = (first.owned, second.owned)
            if all(owned) and len(owned[0] | owned[1]) == PARTITIONS and second.ready.is_set():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the partitions were not shared out")
        await asyncio.sleep(0.5)
        want = reference_book(load_instruments(), work)[0]
        books = [first.engine.book, second.engine.book]
        ids = [set(b.account_ids) for b in books]
        assert not ids[0] & ids[1]
        assert ids[0] | ids[1] == set(want.account_ids)
        for b in books:
            for acc in b.account_ids:
                a, w = b.slot_of(acc), want.slot_of(acc)
                assert a is not None and w is not None
                assert b.bal[:, a].tolist() == want.bal[:, w].tolist()
                assert len(b.positions_of(a)) == len(want.positions_of(w))
        # Each merges both partials into the group view: the map of the whole book.
        from monitor.cascade import liquidation_map, take_snapshot

        def both_merged(d: Daemon) -> bool:
            g = d.market.last_group if d.market is not None else None
            return g is not None and g.merged.instances == ("test-a", "test-b")

        await wait_for_true(lambda: both_merged(first) and both_merged(second), 20)
        whole = liquidation_map(take_snapshot(want))
        for d in (first, second):
            assert d.market is not None and d.market.last_group is not None
            merged = d.market.last_group.merged.map
            np.testing.assert_array_equal(merged.accounts[:, :], whole.accounts)
            np.testing.assert_allclose(merged.notional, whole.notional, rtol=1e-9)

        # In a group, one instance (the owner of partition 0) alerts on the group
        # view's cascades (no bad debt there: it needs per-account figures).
        def group_alerts(records: list[Any]) -> list[dict[str, Any]]:
            out = [orjson.loads(r.value) for r in records]
            return [a for a in out if a["kind"] == "cascade" and a["cascade"]["bad_debt"] is None]

        deadline = time.monotonic() + 20
        while not group_alerts(await read_topic(broker.bootstrap, topics.alerts, 1.0)):
            assert time.monotonic() < deadline, "no cascade alert from the group view"
            for d in (first, second):
                await d.checkpoint("test")  # flushes the alert sinks
        found = group_alerts(await read_topic(broker.bootstrap, topics.alerts, 1.0))
        ids = [a["id"] for a in found]
        assert len(ids) == len(set(ids))  # one speaker, not one per instance
    finally:
        for d, task in ((first, t1), (second, t2)):
            if d is not None and task is not None:
                d.request_stop()
                assert await asyncio.wait_for(task, 30) == 0


async def test_a_commit_never_moves_the_groups_offset_backwards(
    broker: TansuBroker, topics: Topics, tmp_path: Path
) -> None:
    from aiokafka.structs import OffsetAndMetadata

    work = make_workload(accounts=6, ticks=20, events=30, seed=9)
    await publish(broker.bootstrap, topics, work)
    # The group committed further than this instance's (missing) state reaches,
    # e.g. another instance's progress before its snapshot was lost.
    ahead = {TopicPartition(topics.account_events, p): 10_000 for p in range(PARTITIONS)}
    committer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=topics.group)
    await committer.start()
    try:
        committer.assign(list(ahead))
        await committer.commit({tp: OffsetAndMetadata(o, "") for tp, o in ahead.items()})
    finally:
        await committer.stop()
    daemon = Daemon(
        daemon_config(broker.bootstrap, topics, tmp_path / "state"),
        registry=CollectorRegistry(),
        install_signal_handlers=False,
    )
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 30)
        await wait_applied(daemon, topics, work)
        # rebuilt from the beginning (no snapshot), and checkpointed
        assert_same_book(daemon.engine.book, reference_book(load_instruments(), work)[0])
        assert await daemon.checkpoint("test")
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    check = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=topics.group)
    await check.start()
    try:
        for tp, o in ahead.items():
            assert await check.committed(tp) == o
    finally:
        await check.stop()


async def test_prices_start_now_skips_the_ticks_recorded_before_the_start(
    broker: TansuBroker, topics: Topics, tmp_path: Path
) -> None:
    old = [(b"BTC-PERP", orjson.dumps({"symbol": "BTC-PERP", "price": 100.0 + i, "ts": 1 + i}))
           for i in range(5)]  # fmt: skip
    await produce(broker.bootstrap, topics.prices, old, partitions=PARTITIONS)
    await asyncio.sleep(0.05)  # the records' broker times are now before the start
    daemon = Daemon(
        daemon_config(broker.bootstrap, topics, tmp_path / "state", kafka={"prices_start": "now"}),
        registry=CollectorRegistry(),
        install_signal_handlers=False,
    )
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 30)
        new = [(b"BTC-PERP", orjson.dumps({"symbol": "BTC-PERP", "price": 200.0, "ts": 10}))]
        await produce(broker.bootstrap, topics.prices, new, partitions=PARTITIONS)
        sid = load_instruments().symbol_id["BTC-PERP"]
        await wait_for_true(lambda: daemon.engine.book.sym_ts[sid] == 10, 20)
        assert daemon.engine.book.sym_price[sid] == 200.0
        assert daemon.prices is not None and daemon.prices.skipped == len(old)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


async def read_topic(bootstrap: str, topic: str, timeout_s: float = 3.0) -> list[Any]:
    return await consume_all(bootstrap, topic, 10**6, timeout_s=timeout_s)


async def test_the_market_job_exports_its_map_and_cascades_and_publishes_its_partial(
    broker: TansuBroker, topics: Topics, tmp_path: Path
) -> None:
    from monitor.cascade import liquidation_map, take_snapshot
    from monitor.cascade.partial import from_wire

    market = {"map_interval_s": 0.3, "cascade_interval_s": 0.3,
              "cascade_notional_threshold": 1.0, "shocks": ["BTC=-10%"]}  # fmt: skip
    daemon = Daemon(
        daemon_config(broker.bootstrap, topics, tmp_path / "state", market=market),
        registry=CollectorRegistry(),
        install_signal_handlers=False,
    )
    task = asyncio.create_task(daemon.run())
    work = make_workload(accounts=40, ticks=100, events=300, seed=4)
    try:
        await publish(broker.bootstrap, topics, work)
        await asyncio.wait_for(daemon.ready.wait(), 30)
        await wait_applied(daemon, topics, work)
        assert daemon.market is not None
        text = ""
        deadline = time.monotonic() + 20
        while "\nmonitor_cascade_liquidated_notional{" not in text or (
            daemon.market.last_group is None
        ):  # the map round, then the cascades: both done once
            assert time.monotonic() < deadline, "no market round in time"
            await asyncio.sleep(0.1)
            text = (await http_get(daemon.http.port, "/metrics"))[1].decode()
        for name in ("monitor_liquidation_map_notional", "monitor_cascade_liquidated_notional",
                     "monitor_group_liquidation_map_notional",
                     "monitor_group_cascade_liquidated_notional"):  # fmt: skip
            assert f"\n{name}{{" in text, name
        assert "monitor_group_instances 1.0" in text
        # The partial on the topic is this instance's, keyed by its id, and its map is
        # the map of the book (nothing else moved since: the stream is over).
        parts = [r for r in await read_topic(broker.bootstrap, topics.partials) if r.value]
        assert parts and {r.key for r in parts} == {b"test-0"}
        last = from_wire(parts[-1].value)
        want = liquidation_map(take_snapshot(daemon.engine.book), last.moves)
        np.testing.assert_array_equal(last.map.accounts, want.accounts)
        assert last.partitions == tuple(range(PARTITIONS))
        # A standard shock that liquidates anything crosses the 1.0 notional threshold.
        await daemon.checkpoint("test")
        alerts = [orjson.loads(r.value) for r in await read_topic(broker.bootstrap, topics.alerts)]
        cascade = [a for a in alerts if a["kind"] == "cascade"]
        assert cascade and all(a["cascade"]["shock"] == "BTC=-10%" for a in cascade)
        assert all(a["account"] == "market" and a["state"] == "firing" for a in cascade)
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    # A clean stop clears this instance's partial (a tombstone on its key).
    records = await read_topic(broker.bootstrap, topics.partials)
    assert records[-1].key == b"test-0" and records[-1].value is None


async def test_alert_state_travels_in_the_partition_snapshots_across_a_restart(
    broker: TansuBroker, topics: Topics, tmp_path: Path
) -> None:
    """A firing alert whose account recovers while the monitor is down is resolved
    after the restart; an account still at risk is not alerted a second time."""
    enc = orjson.dumps
    t0 = 1_700_000_000_000
    setup = [
        (a.encode(), enc({"type": "balance", "account": a, "asset": "USDT", "amount": 1000.0,
                          "ts": t0}))
        for a in ("A", "B")
    ] + [
        (a.encode(), enc({"type": "position", "account": a, "symbol": "BTC-PERP", "qty": 2.0,
                          "entry_price": 60000.0, "ts": t0 + 1}))
        for a in ("A", "B")
    ]  # fmt: skip
    # MM = 120,000 * 0.005 - 50 = 550 (bracket 2 of BTC-PERP); at 59,840 each account
    # loses 320: equity 680, margin ratio 0.809 -> warning.
    tick = [(b"BTC-PERP", enc({"symbol": "BTC-PERP", "price": 59840.0, "ts": t0 + 2}))]
    state_dir = tmp_path / "state"

    async def run_until_applied(events: int, prices: int) -> None:
        daemon = Daemon(daemon_config(broker.bootstrap, topics, state_dir),
                        registry=CollectorRegistry(), install_signal_handlers=False)  # fmt: skip
        task = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.ready.wait(), 30)
            await wait_applied(daemon, topics, Workload([(None, b"")] * prices,
                                                        [(None, b"")] * events))  # fmt: skip
        finally:
            daemon.request_stop()
            assert await asyncio.wait_for(task, 30) == 0

    await produce(broker.bootstrap, topics.account_events, setup, partitions=PARTITIONS)
    await produce(broker.bootstrap, topics.prices, tick, partitions=PARTITIONS)
    await run_until_applied(len(setup), len(tick))
    first = [orjson.loads(r.value) for r in await read_topic(broker.bootstrap, topics.alerts)]
    assert sorted((a["account"], a["state"]) for a in first if a["kind"] == "margin") == [
        ("A", "firing"),
        ("B", "firing"),
    ]
    # While the monitor is down, A is topped up.
    top_up = [(b"A", enc({"type": "balance", "account": "A", "asset": "USDT",
                          "amount": 5000.0, "ts": t0 + 3}))]  # fmt: skip
    await produce(broker.bootstrap, topics.account_events, top_up, partitions=PARTITIONS)
    await run_until_applied(len(setup) + 1, len(tick))
    after = [orjson.loads(r.value) for r in await read_topic(broker.bootstrap, topics.alerts)]
    new = [a for a in after[len(first) :] if a["kind"] == "margin"]
    assert [(a["account"], a["state"]) for a in new] == [("A", "resolved")]


async def test_the_daemon_delivers_alerts_summary_and_online_flag_over_mqtt(
    broker: TansuBroker, topics: Topics, tmp_path: Path
) -> None:
    from tests.integration.test_mqtt_sink import observing, retained
    from tests.support.mosquitto import Mosquitto

    mqtt = Mosquitto(tmp_path / "mosquitto")
    mqtt.start()
    try:
        async with observing(mqtt) as obs:
            mqtt_cfg = {"enabled": True, "host": mqtt.host, "port": mqtt.port,
                        "topic_prefix": obs.prefix, "instance_topics": True,
                        "summary_interval_s": 0.2}  # fmt: skip
            daemon = Daemon(
                daemon_config(broker.bootstrap, topics, tmp_path / "state", mqtt=mqtt_cfg),
                registry=CollectorRegistry(),
                install_signal_handlers=False,
            )
            task = asyncio.create_task(daemon.run())
            work = make_workload(accounts=30, ticks=200, events=300, seed=8)
            try:
                await publish(broker.bootstrap, topics, work)
                await asyncio.wait_for(daemon.ready.wait(), 30)
                await wait_applied(daemon, topics, work)
                book = daemon.engine.book
                at_risk = {book.account_ids[a] for a in range(book.n_accounts)
                           if book.status[a] > 0}  # fmt: skip
                assert at_risk
                summary = f"{obs.prefix}/summary/test-0"

                def delivered(_: object) -> bool:
                    got = {a.account for _, a in obs.alerts() if a.kind == "margin"}
                    return at_risk <= got and obs.last(summary) is not None

                await obs.wait_for(delivered, 20)
                for topic, a in obs.alerts():
                    if a.kind == "margin":
                        assert topic == f"{obs.prefix}/alerts/margin/{a.account}"
                # retained: a new subscriber gets the summary (of this instance's book)
                data = await retained(mqtt, summary, lambda d: d["accounts"] == book.n_accounts)
                assert sum(data["by_status"].values()) == book.n_accounts
                online = obs.last(f"{obs.prefix}/monitor/test-0/online")
                assert online is not None and online.payload == b"online"
            finally:
                daemon.request_stop()
                assert await asyncio.wait_for(task, 30) == 0
    finally:
        mqtt.stop()
