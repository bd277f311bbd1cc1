"""``monitor bench --kafka``: Kafka ingestion, the daemon against the raw ceiling.

One run, one broker (Tansu started here unless ``--bootstrap`` names one),
fresh topics of 4 partitions:

1. *warm-up*: a few hundred records; the real daemon
   (:class:`~monitor.bench.probe.ProbedDaemon`, same process, uvloop, shipped
   defaults) starts, joins its consumer group and goes live;
2. *load*: N messages (a balance for each of the accounts, positions, ticks
   for the rest) are generated and written with ``create_batch``/``send_batch``
   by another process *while this event loop is blocked*: the daemon sees the
   load only once all of it is on the broker, with its group settled;
3. *daemon rate*: N divided by the wall time from the first ``getmany`` that
   returned records to the moment the last of the N was applied (every record
   decoded, conflated, applied, and the dirty accounts evaluated for alerts);
4. *ceiling*: just before and just after the daemon's run, with its loop
   blocked, a bare aiokafka consumer in another process reads the same N
   records and decodes each with the engine's decoder (no book), with the
   daemon's collector settings: wall time from the first ``getmany`` that
   returned records to the last decoded; the ceiling is the mean of the two
   (it follows the neighbours' load over the daemon's run). Once more with
   CPython's default collector settings, for comparison;
5. *latency*: another process produces a steady 20,000 msgs/s (90% ticks
   stamped with the wall time at produce, 10% balance updates; one batch per
   partition every 20 ms, see :class:`~monitor.bench.load.SteadyPlan`); each tick's
   tick-to-evaluation is the end of the evaluation that covered its offset
   minus its stamp -- every produced tick, those conflated into a later tick
   of their symbol included (they are evaluated when that tick is);
6. *floor*: the same stream for 5 s to a bare consumer with the daemon's fetch
   settings, in another process, the daemon's loop blocked: produce -> returned
   by ``getmany`` of every tick, what the broker, the client and the machine
   cost before any monitor code runs;
7. *checkpoint*: one checkpoint of the whole book, timed, and the part of it
   that holds the apply lock (batches wait that long). The daemon checkpoints
   every 300 s here, outside the measured phases; production's default is
   30 s, so one such stall per 30 s is not in the latency figures.

Both rates are also given per CPU second of the process (every thread): the
machine may be shared, and CPU time per message moves less with the
neighbours than wall time does. The target is on the wall-clock ratio.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CollectorRegistry

from monitor.bench.broker import BenchTopics, create_topics, delete_topics, kafka_broker
from monitor.bench.load import SYMBOLS, ProduceJob, SteadyPlan, produce, warmup_load
from monitor.bench.probe import (
    BenchError,
    Probe,
    ProbedDaemon,
    counts_of,
    daemon_config,
    produce_blocking,
    produce_steady_blocking,
    run_steady,
    wait_until,
    with_daemon,
)
from monitor.bench.report import Row
from monitor.bench.stats import Latency, between, rate, tick_latencies
from monitor.events import Decoder
from monitor.instruments import load_instruments

PARTITIONS = 4
STEADY_RATE = 20_000
STEADY_SECONDS = 10.0
FLOOR_SECONDS = 5.0
CEILING_TARGET = 0.70
LATENCY_P99_TARGET_MS = 50.0

Ranges = Mapping[TopicPartition, tuple[int, int]]


async def _read(
    bootstrap: str, ranges: Ranges, each: Any, timeout_s: float = 120.0
) -> tuple[int, float, float]:
    """Read every ``[start, end)`` offset range with one bare consumer, handing each
    record to ``each(topic, record)``; returns (records, wall seconds and process CPU
    seconds from the first getmany that returned records to the last handled)."""
    ranges = {tp: r for tp, r in ranges.items() if r[1] > r[0]}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    try:
        consumer.assign(list(ranges))
        for tp, (start, _) in ranges.items():
            consumer.seek(tp, start)
        left = set(ranges)
        n = 0
        t0: float | None = None
        cpu0 = 0.0
        deadline = time.monotonic() + timeout_s
        while left:
            if time.monotonic() > deadline:
                raise BenchError(f"read back only {n} records in {timeout_s:.0f} s")
            data = await consumer.getmany(timeout_ms=500, max_records=10_000)
            if data and t0 is None:
                t0, cpu0 = time.perf_counter(), time.process_time()
            for tp, recs in data.items():
                end = ranges[tp][1]
                if recs[-1].offset >= end - 1:
                    recs = [r for r in recs if r.offset < end]
                    left.discard(tp)
                    consumer.pause(tp)
                topic = tp.topic
                for r in recs:
                    each(topic, r)
                n += len(recs)
        if t0 is None:
            return 0, 0.0, 0.0
        return n, time.perf_counter() - t0, time.process_time() - cpu0
    finally:
        await consumer.stop()


async def ceiling(bootstrap: str, prices: str, ranges: Ranges) -> tuple[int, float, float]:
    """Bare consume-and-decode of ``ranges``: (records, wall seconds, CPU seconds)."""
    dec = Decoder(load_instruments())
    decode_price, decode_event = dec.decode_price, dec.decode_event

    def each(topic: str, rec: Any) -> None:
        (decode_price if topic == prices else decode_event)(rec.value)

    return await _read(bootstrap, ranges, each)


def ceiling_blocking(
    bootstrap: str, prices: str, ranges: Ranges, *, tuned_gc: bool = True
) -> tuple[int, float, float]:
    """:func:`ceiling` in another process, *blocking this event loop* meanwhile (a
    daemon on it neither fetches nor competes for the CPU); with ``tuned_gc`` the
    process has the daemon's collector settings (:mod:`monitor.daemon.gctune`),
    else CPython's defaults."""
    spec = {
        "bootstrap": bootstrap,
        "prices": prices,
        "tuned_gc": tuned_gc,
        "ranges": [[tp.topic, tp.partition, a, b] for tp, (a, b) in ranges.items()],
    }
    cmd = [sys.executable, "-m", "monitor.bench.kafka", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.decode(errors="replace").strip().splitlines()[-5:])
        raise BenchError(f"the ceiling consumer failed ({proc.returncode}): {tail}")
    n, wall_s, cpu_s = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    return int(n), float(wall_s), float(cpu_s)


class _Stamp(msgspec.Struct):
    ts: int


async def floor(bootstrap: str, start: Mapping[TopicPartition, int], seconds: float) -> list[float]:
    """Produce -> returned by ``getmany`` of every tick a bare consumer (the daemon's
    fetch settings) reads from ``start`` for ``seconds``; prints ``ready`` once
    assigned, so the stream can start."""
    stamp = msgspec.json.Decoder(_Stamp).decode
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    out: list[float] = []
    try:
        consumer.assign(list(start))
        for tp, o in start.items():
            consumer.seek(tp, o)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            data = await consumer.getmany(timeout_ms=100, max_records=10_000)
            now = time.time_ns() / 1e6
            for recs in data.values():
                out.extend(now - stamp(r.value).ts for r in recs)
    finally:
        await consumer.stop()
    return out


def floor_blocking(plan: SteadyPlan, start: Mapping[TopicPartition, int]) -> Latency:
    """The steady stream of ``plan`` to a bare consumer, both in other processes,
    *blocking this event loop* meanwhile (a daemon on it stays out of the way)."""
    spec = {
        "what": "floor",
        "bootstrap": plan.bootstrap,
        "start": [[tp.topic, tp.partition, o] for tp, o in start.items()],
        "seconds": plan.seconds + 2.0,
    }
    consumer = subprocess.Popen(
        [sys.executable, "-m", "monitor.bench.kafka", json.dumps(spec)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert consumer.stdout is not None
    if consumer.stdout.readline().strip() != b"ready":
        consumer.kill()
        _, err = consumer.communicate()
        raise BenchError(f"the floor consumer did not start: {err.decode(errors='replace')[-300:]}")
    produce_steady_blocking(plan)
    out, err = consumer.communicate()
    if consumer.returncode != 0:
        raise BenchError(f"the floor consumer failed: {err.decode(errors='replace')[-300:]}")
    n, p50, p99, mx = json.loads(out.decode().strip().splitlines()[-1])
    return Latency(int(n), float(p50), float(p99), float(mx))


async def produced_ticks(bootstrap: str, ranges: Ranges) -> dict[int, tuple[Any, Any]]:
    """Prices partition -> (offsets, event times) of the ticks in ``ranges``."""
    stamp = msgspec.json.Decoder(_Stamp).decode
    got: dict[int, tuple[list[int], list[int]]] = {}

    def each(topic: str, rec: Any) -> None:
        offs, ts = got.setdefault(rec.partition, ([], []))
        offs.append(rec.offset)
        ts.append(stamp(rec.value).ts)

    await _read(bootstrap, ranges, each)
    return {p: (np.asarray(o, np.int64), np.asarray(t, np.int64)) for p, (o, t) in got.items()}


def _ends(
    start: Mapping[TopicPartition, int], topic: str, counts: Mapping[int, int]
) -> dict[TopicPartition, int]:
    return {
        TopicPartition(topic, p): start.get(TopicPartition(topic, p), 0) + n
        for p, n in counts.items()
    }


async def _measure(
    d: ProbedDaemon,
    task: asyncio.Task[Any],
    bootstrap: str,
    topics: BenchTopics,
    start: dict[TopicPartition, int],
    messages: int,
    accounts: int,
    steady_rate: float,
    steady_s: float,
) -> dict[str, Any]:
    probe = d.probe
    await wait_until(d.ready.is_set, 120, "starting (joining the group, reading the warm-up)", task)
    job = ProduceJob(
        bootstrap,
        topics.prices,
        topics.account_events,
        PARTITIONS,
        PARTITIONS,
        "mixed",
        messages,
        accounts,
    )
    made = produce_blocking(job)  # the daemon's loop is blocked until the load is written
    load_end = {**start}
    load_end.update(_ends(start, topics.prices, counts_of(made, topics.prices)))
    load_end.update(_ends(start, topics.account_events, counts_of(made, topics.account_events)))
    n_load = sum(load_end.values()) - sum(start.values())
    ranges = {tp: (start.get(tp, 0), e) for tp, e in load_end.items()}
    # The ceiling just before and just after the daemon (its loop blocked both
    # times): their mean follows the neighbours' load over the daemon's run.
    ceilings = [ceiling_blocking(bootstrap, topics.prices, ranges)]
    d.arm(load_end)
    await wait_until(lambda: probe.done_at is not None, 600, "applying the load", task)
    assert probe.first_fetch is not None and probe.done_at is not None
    daemon_s = probe.done_at - probe.first_fetch
    daemon_cpu_s = probe.cpu_s
    ceilings.append(ceiling_blocking(bootstrap, topics.prices, ranges))
    plain = ceiling_blocking(bootstrap, topics.prices, ranges, tuned_gc=False)
    for n, _, _ in [*ceilings, plain]:
        if n != n_load:
            raise BenchError(f"the ceiling read {n} records, the load has {n_load}")
    ceil_s = sum(c[1] for c in ceilings) / len(ceilings)
    ceil_cpu_s = sum(c[2] for c in ceilings) / len(ceilings)
    plain_s = plain[1]
    out: dict[str, Any] = {
        "load": made,
        "load_messages": n_load,
        "load_ticks": sum(counts_of(made, topics.prices).values()),
        "daemon_seconds": daemon_s,
        "daemon_msgs_per_s": rate(n_load, daemon_s),
        "daemon_msgs_per_cpu_s": rate(n_load, daemon_cpu_s),
        "ceiling_seconds": ceil_s,
        "ceiling_msgs_per_s": rate(n_load, ceil_s),
        "ceiling_msgs_per_cpu_s": rate(n_load, ceil_cpu_s),
        "ceiling_default_gc_msgs_per_s": rate(n_load, plain_s),
        "ceiling_before_after_msgs_per_s": [rate(n_load, c[1]) for c in ceilings],
        "book_accounts": d.engine.book.n_accounts,
        "book_positions": d.engine.book.n_positions,
    }
    # Latency at a steady rate.
    book = d.engine.book
    marks = {s: float(book.sym_price[book.params.symbol_id[s]]) for s in SYMBOLS}
    plan = SteadyPlan(
        bootstrap,
        topics.prices,
        topics.account_events,
        PARTITIONS,
        PARTITIONS,
        steady_rate,
        steady_s,
        marks,
        accounts_hi=accounts,
    )
    probe.record_evaluations()
    sent = await run_steady(plan)
    steady_end = {**load_end}
    steady_end.update(_ends(load_end, topics.prices, counts_of(sent, topics.prices)))
    steady_end.update(
        _ends(load_end, topics.account_events, counts_of(sent, topics.account_events))
    )
    d.arm(steady_end)
    await wait_until(lambda: probe.done_at is not None, 60, "applying the steady stream", task)
    evaluations = probe.evaluations()
    fetches = probe.fetches()
    tick_ranges = {
        tp: (load_end.get(tp, 0), e) for tp, e in steady_end.items() if tp.topic == topics.prices
    }
    ticks = await produced_ticks(bootstrap, tick_ranges)
    lat, missing = tick_latencies(ticks, evaluations)
    to_fetch, _ = tick_latencies(ticks, fetches)
    daemon_part, _ = between(ticks, fetches, evaluations)
    out.update(
        steady=sent,
        latency=Latency.of(lat),
        to_fetch=Latency.of(to_fetch),
        daemon_part=Latency.of(daemon_part),
        latency_unevaluated=missing,
        steady_ticks=sum(counts_of(sent, topics.prices).values()),
        steady_step_s=plan.step_s,
    )
    # The floor: the same stream to a bare consumer, the daemon frozen meanwhile.
    floor_plan = dataclasses.replace(plan, seconds=FLOOR_SECONDS, seed=plan.seed + 1)
    floor_start = {tp: e for tp, e in steady_end.items() if tp.topic == topics.prices}
    out["floor"] = floor_blocking(floor_plan, floor_start)
    out["checkpoint_s"], out["checkpoint_lock_s"] = await d.timed_checkpoint()
    return out


async def bench_kafka_async(
    bootstrap: str | None,
    messages: int,
    accounts: int,
    *,
    steady_rate: float = STEADY_RATE,
    steady_s: float = STEADY_SECONDS,
) -> dict[str, Any]:
    """Every figure of the bench, as a dict (see the module docstring)."""
    with kafka_broker(bootstrap) as bs:
        topics = BenchTopics.fresh("bench-kafka")
        await create_topics(bs, {t: PARTITIONS for t in topics.all()})
        try:
            warm = warmup_load()
            start: dict[TopicPartition, int] = {}
            for topic, msgs in ((topics.prices, warm.prices), (topics.account_events, warm.events)):
                counts, _ = await produce(bs, topic, msgs, PARTITIONS)
                start.update({TopicPartition(topic, p): n for p, n in counts.items()})
            with tempfile.TemporaryDirectory(prefix="bench-kafka-state-") as state:
                probe = Probe(topics.prices)
                d = ProbedDaemon(
                    daemon_config(bs, topics, state),
                    probe,
                    registry=CollectorRegistry(),
                    install_signal_handlers=False,
                )
                out = await with_daemon(
                    d,
                    lambda task: _measure(
                        d, task, bs, topics, start, messages, accounts, steady_rate, steady_s
                    ),
                )
            out["share_of_ceiling"] = out["daemon_msgs_per_s"] / out["ceiling_msgs_per_s"]
            out["cpu_share_of_ceiling"] = (
                out["daemon_msgs_per_cpu_s"] / out["ceiling_msgs_per_cpu_s"]
            )
            out["steady_rate_target"] = steady_rate
            return out
        finally:
            if bootstrap:
                await delete_topics(bs, topics.all())


def rows(r: Mapping[str, Any]) -> list[Row]:
    load, steady = r["load"], r["steady"]
    lat: Latency = r["latency"]
    fetch: Latency = r["to_fetch"]
    part: Latency = r["daemon_part"]
    floor: Latency = r["floor"]
    share = float(r["share_of_ceiling"])
    rates = list(load["rates"].values())
    out = [
        Row(f"kafka load: messages ({r['load_ticks']:,} ticks)", float(r["load_messages"]), ""),
        Row("  accounts in the book", float(r["book_accounts"]), ""),
        Row("  positions in the book", float(r["book_positions"]), ""),
        Row("  produce, create_batch/send_batch (prices)", float(rates[0]), "msgs/s"),
        Row("  produce, create_batch/send_batch (events)", float(rates[-1]), "msgs/s"),
        Row("ceiling: bare aiokafka consume + decode", float(r["ceiling_msgs_per_s"]), "msgs/s"),
        Row("  just before the daemon", float(r["ceiling_before_after_msgs_per_s"][0]), "msgs/s"),
        Row("  just after the daemon", float(r["ceiling_before_after_msgs_per_s"][1]), "msgs/s"),
        Row(
            "  the same with CPython's default collector",
            float(r["ceiling_default_gc_msgs_per_s"]),
            "msgs/s",
        ),
        Row("daemon: first fetch -> last applied (live)", float(r["daemon_msgs_per_s"]), "msgs/s"),
        Row(
            "daemon / ceiling",
            100 * share,
            "%",
            f">= {CEILING_TARGET:.0%}",
            share >= CEILING_TARGET,
        ),
        Row(
            "  daemon / ceiling with CPython's default collector",
            100 * float(r["daemon_msgs_per_s"]) / float(r["ceiling_default_gc_msgs_per_s"]),
            "%",
        ),
        Row(
            "steady stream: achieved rate",
            float(steady["rate"]),
            "msgs/s",
            f"{r['steady_rate_target']:,.0f}",
            steady["rate"] >= 0.97 * r["steady_rate_target"],
        ),
        Row("  pacing step: one batch per partition every", 1000 * float(r["steady_step_s"]), "ms"),
        Row("  tick-to-evaluation samples (every tick)", float(lat.n), "ticks"),
        Row(
            "  ticks never evaluated",
            float(r["latency_unevaluated"]),
            "ticks",
            "0",
            r["latency_unevaluated"] == 0,
        ),
        Row("  tick-to-evaluation p50", lat.p50, "ms"),
        Row(
            "  tick-to-evaluation p99",
            lat.p99,
            "ms",
            f"<= {LATENCY_P99_TARGET_MS:.0f} ms",
            lat.p99 <= LATENCY_P99_TARGET_MS,
        ),
        Row("  tick-to-evaluation max", lat.max, "ms"),
        Row("  produce -> returned by the daemon's getmany, p50", fetch.p50, "ms"),
        Row("  produce -> returned by the daemon's getmany, p99", fetch.p99, "ms"),
        Row("  getmany -> end of its evaluation, p50", part.p50, "ms"),
        Row("  getmany -> end of its evaluation, p99", part.p99, "ms"),
        Row("floor: same stream, bare consumer, daemon frozen, p50", floor.p50, "ms"),
        Row("floor: produce -> returned by getmany, p99", floor.p99, "ms"),
        Row("  per CPU second: ceiling", float(r["ceiling_msgs_per_cpu_s"]), "msg/cpu-s"),
        Row("  per CPU second: daemon", float(r["daemon_msgs_per_cpu_s"]), "msg/cpu-s"),
        Row("  per CPU second: daemon / ceiling", 100 * float(r["cpu_share_of_ceiling"]), "%"),
        Row("checkpoint of the book (snapshot + commit)", 1000 * float(r["checkpoint_s"]), "ms"),
        Row("  of which the apply loop waits", 1000 * float(r["checkpoint_lock_s"]), "ms"),
    ]
    return out


def run_async(main: Any) -> Any:
    """Run a bench coroutine on uvloop (the daemon's loop in production)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        return asyncio.run(main)
    return uvloop.run(main)


def bench_kafka(bootstrap: str | None, messages: int, accounts: int) -> dict[str, Any]:
    return dict(run_async(bench_kafka_async(bootstrap, messages, accounts)))


def main(argv: Sequence[str]) -> int:
    """The ceiling and floor processes: ``python -m monitor.bench.kafka JSON``
    prints ``[records, wall seconds, CPU seconds]`` (ceiling) or the latency
    summary (floor)."""
    spec = json.loads(argv[0])
    if spec.get("tuned_gc", True):
        from monitor.daemon import gctune

        gctune.for_streaming()
    if spec.get("what") == "floor":
        start = {TopicPartition(t, p): o for t, p, o in spec["start"]}
        lat = run_async(floor(spec["bootstrap"], start, float(spec["seconds"])))
        summary = Latency.of(lat)
        sys.stdout.write(json.dumps([summary.n, summary.p50, summary.p99, summary.max]) + "\n")
        return 0
    ranges = {TopicPartition(t, p): (a, b) for t, p, a, b in spec["ranges"]}
    out = run_async(ceiling(spec["bootstrap"], spec["prices"], ranges))
    sys.stdout.write(json.dumps(list(out)) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
