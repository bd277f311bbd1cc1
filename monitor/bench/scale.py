"""``monitor bench --scale``: aggregate ingest with one and with two instances.

Side by side in one run, on one broker (Tansu unless ``--bootstrap``): for one
and then two ``monitor run`` processes in one consumer group (account-events
with 12 partitions; prices with 4, read whole by every instance), on fresh
topics each time:

1. a warm-up (a few hundred accounts on every partition, a tick per symbol);
   the instances start, the group settles (every partition owned by exactly
   one instance, every instance ready);
2. the instances are frozen (SIGSTOP) while N account events (a balance per
   account, then positions) are written with ``create_batch``/``send_batch``;
3. they are thawed (SIGCONT) and their ``/metrics`` are read every 250 ms
   (every 20 ms from 80% applied) until the instances together have applied
   all N: the rate is N over the time from the thaw to the end of the first
   reading that shows all N applied (an upper bound: late by at most the
   interval since the reading before, reported as the resolution);
4. steps 2-3 once more with N events of new accounts; the faster round counts
   (the machine may be shared: the least disturbed round is the one to compare).

The CPU time the instances and the broker used over each measured interval
(from ``/proc``) says how much of the machine they had; the rate per busy
core-second tells scaling apart from a machine that gave the two instances
less than two cores (it has two, shared with the broker and anything else
running).

Only account events are in the measured load: they are what a consumer group
shares out; every instance reads all of ``prices``, so ticks do not scale out
by design. Each instance runs the shipped defaults (market-level jobs on)
with its own state directory; checkpoints are every 300 s (outside the
measurement) and the session timeout is 30 s (the freeze must not evict).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from monitor.bench.broker import (
    BenchTopics,
    create_topics,
    delete_topics,
    free_port,
    kafka_broker_process,
)
from monitor.bench.kafka import run_async
from monitor.bench.load import events_load, produce, warmup_load
from monitor.bench.probe import BenchError
from monitor.bench.report import Row
from monitor.bench.stats import first_reaching, rate
from monitor.config import to_toml

EVENT_PARTITIONS = 12
PRICE_PARTITIONS = 4
FAST_POLL_S = 0.02
SLOW_POLL_S = 0.25
ROUNDS = 2


@dataclass
class Instance:
    """One ``monitor run`` process."""

    name: str
    port: int
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: TextIO | None = field(default=None, repr=False)

    def start(self) -> None:
        self._log = self.log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "monitor", "run", "--config", str(self.config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")},
        )

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a frozen process cannot act on SIGTERM
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None


_LINE = re.compile(r"^(\w+)\{([^}]*)\} (\S+)$", re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Scrape:
    """What the bench reads from one instance's ``/metrics``."""

    ready: bool
    applied: int  # account events applied
    partitions: frozenset[int]  # account-events partitions it owns (those with a lag figure)


def parse_metrics(text: str, events_topic: str) -> Scrape:
    """The figures of :class:`Scrape` from Prometheus text."""
    applied = 0
    parts: set[int] = set()
    for name, labels, value in _LINE.findall(text):
        lab = dict(_LABEL.findall(labels))
        if lab.get("topic") != events_topic:
            continue
        if name == "monitor_messages_applied_total":
            applied = int(float(value))
        elif name == "monitor_consumer_lag":
            parts.add(int(lab["partition"]))
    ready = re.search(r"^monitor_ready (\S+)$", text, re.M)
    return Scrape(ready is not None and float(ready.group(1)) == 1.0, applied, frozenset(parts))


async def scrape(port: int, events_topic: str) -> Scrape | None:
    """One GET /metrics (None while the instance does not answer)."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return None
    try:
        writer.write(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        await writer.drain()
        body = await reader.read()
    except OSError:
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    _, _, text = body.partition(b"\r\n\r\n")
    return parse_metrics(text.decode(errors="replace"), events_topic)


def stat_cpu_seconds(stat: str, ticks_per_s: float) -> float:
    """User + system CPU seconds from the text of ``/proc/<pid>/stat``."""
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / ticks_per_s


def cpu_seconds(pid: int | None) -> float:
    """CPU seconds a process has used so far (NaN where /proc cannot tell)."""
    if pid is None:
        return float("nan")
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    return stat_cpu_seconds(text, float(os.sysconf("SC_CLK_TCK")))


def settled(scrapes: list[Scrape | None]) -> bool:
    """Every instance ready, the partitions shared out: each owned exactly once."""
    if any(s is None or not s.ready for s in scrapes):
        return False
    owned = [s.partitions for s in scrapes if s is not None]
    union = frozenset().union(*owned)
    return union == frozenset(range(EVENT_PARTITIONS)) and sum(map(len, owned)) == len(union)


def _tables(
    bootstrap: str, topics: BenchTopics, name: str, port: int, state: Path
) -> dict[str, dict[str, Any]]:
    return {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": topics.group,
            "session_timeout_ms": 30_000,
        },
        "topics": topics.config(),
        "http": {"host": "127.0.0.1", "port": port},
        "state": {"dir": str(state), "snapshot_interval_s": 300.0},
        "instance": {"id": name},
    }


async def _round(
    bootstrap: str,
    broker_pid: int | None,
    instances: list[Instance],
    topic: str,
    load: Any,
    work: Path,
) -> dict[str, Any]:
    """One measurement: freeze, write ``load``, thaw, read until all is applied."""
    loop = asyncio.get_running_loop()
    first = list(await asyncio.gather(*(scrape(i.port, topic) for i in instances)))
    if any(s is None for s in first):
        raise BenchError(f"an instance does not answer on /metrics (logs: {work})")
    base_per = [s.applied if s is not None else 0 for s in first]
    base = sum(base_per)
    for inst in instances:
        inst.signal(signal.SIGSTOP)
    t_write = time.perf_counter()
    _, produce_rate = await produce(bootstrap, topic, load.events, EVENT_PARTITIONS)
    write_s = time.perf_counter() - t_write
    target = base + len(load.events)
    pids = [i.proc.pid if i.proc is not None else None for i in instances]
    cpu0 = [cpu_seconds(p) for p in pids]
    broker0 = cpu_seconds(broker_pid)
    for inst in instances:
        inst.signal(signal.SIGCONT)
    t0 = time.perf_counter()
    times: list[float] = []
    totals: list[int] = []
    per: list[int] = []
    deadline = loop.time() + 600
    while not totals or totals[-1] < target:
        if loop.time() > deadline:
            raise BenchError(
                f"{len(instances)} instances applied {totals[-1] - base} of "
                f"{len(load.events)} events in 600 s (logs: {work})"
            )
        scrapes = list(await asyncio.gather(*(scrape(i.port, topic) for i in instances)))
        times.append(time.perf_counter() - t0)  # the count is from before this moment
        per = [
            s.applied - b if s is not None else 0 for s, b in zip(scrapes, base_per, strict=True)
        ]
        totals.append(base + sum(per))
        near = totals[-1] - base >= 0.8 * len(load.events)
        await asyncio.sleep(FAST_POLL_S if near else SLOW_POLL_S)
    done = first_reaching(times, totals, target)
    assert done is not None
    cpu = [cpu_seconds(p) - c for p, c in zip(pids, cpu0, strict=True)]
    return {
        "events": len(load.events),
        "seconds": done,
        "msgs_per_s": rate(len(load.events), done),
        "resolution_s": done - (times[-2] if len(times) > 1 else 0.0),
        "instance_cores": [c / done for c in cpu],
        "broker_cores": (cpu_seconds(broker_pid) - broker0) / done,
        "applied_per_instance": per,
        "write_s": write_s,
        "produce_msgs_per_s": produce_rate,
        "readings": len(times),
    }


async def _phase(
    bootstrap: str,
    broker_pid: int | None,
    n_instances: int,
    messages: int,
    accounts: int,
    rounds: int,
    work: Path,
) -> dict[str, Any]:
    """``n_instances`` instances on fresh topics; the fastest of ``rounds`` rounds."""
    topics = BenchTopics.fresh(f"bench-scale{n_instances}")
    await create_topics(
        bootstrap,
        {
            topics.prices: PRICE_PARTITIONS,
            topics.account_events: EVENT_PARTITIONS,
            topics.alerts: 1,
            topics.dlq: 1,
            topics.partials: 1,
        },
    )
    warm = warmup_load(accounts=600)
    await produce(bootstrap, topics.prices, warm.prices, PRICE_PARTITIONS)
    await produce(bootstrap, topics.account_events, warm.events, EVENT_PARTITIONS)
    instances = []
    for k in range(n_instances):
        name = f"bench-{n_instances}-{k}"
        port = free_port()
        cfg = work / f"{name}.toml"
        cfg.write_text(to_toml(_tables(bootstrap, topics, name, port, work / f"{name}-state")))
        instances.append(Instance(name, port, cfg, work / f"{name}.log"))
    topic = topics.account_events
    try:
        for inst in instances:
            inst.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        stable = 0
        while stable < 3:  # settled on three readings in a row, 0.5 s apart
            if loop.time() > deadline:
                raise BenchError(f"{n_instances} instances did not settle in 120 s (logs: {work})")
            if not all(i.alive() for i in instances):
                raise BenchError(f"an instance exited while starting (logs: {work})")
            scrapes = list(await asyncio.gather(*(scrape(i.port, topic) for i in instances)))
            stable = stable + 1 if settled(scrapes) else 0
            await asyncio.sleep(0.5)
        owned = [sorted(s.partitions) for s in scrapes if s is not None]
        results = []
        for r in range(rounds):
            load = events_load(messages, accounts, first=r * accounts)
            results.append(await _round(bootstrap, broker_pid, instances, topic, load, work))
        best = min(results, key=lambda x: float(x["seconds"]))
        return {
            **best,
            "instances": n_instances,
            "partitions": owned,
            "rounds_msgs_per_s": [x["msgs_per_s"] for x in results],
        }
    finally:
        for inst in instances:
            inst.stop()
        if bootstrap:
            await delete_topics(bootstrap, topics.all())


async def bench_scale_async(
    bootstrap: str | None,
    messages: int,
    accounts: int,
    *,
    rounds: int = ROUNDS,
    keep_logs: Path | None = None,
) -> dict[str, Any]:
    with (
        kafka_broker_process(bootstrap) as (bs, pid),
        tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp,
    ):
        work = keep_logs or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        one = await _phase(bs, pid, 1, messages, accounts, rounds, work)
        two = await _phase(bs, pid, 2, messages, accounts, rounds, work)
    return {
        "one": one,
        "two": two,
        "ratio": two["msgs_per_s"] / one["msgs_per_s"],
        "cores": os.cpu_count() or 0,
        "accounts": accounts,
    }


def bench_scale(bootstrap: str | None, messages: int, accounts: int) -> dict[str, Any]:
    return dict(run_async(bench_scale_async(bootstrap, messages, accounts)))


def _rates(p: Mapping[str, Any]) -> str:
    return ", ".join(f"{x / 1000:,.0f}k" for x in p["rounds_msgs_per_s"])


def rows(r: Mapping[str, Any]) -> list[Row]:
    one, two = r["one"], r["two"]

    def cores(p: Mapping[str, Any]) -> str:
        inst = " + ".join(f"{c:.2f}" for c in p["instance_cores"])
        broker = p["broker_cores"]
        return inst if math.isnan(broker) else f"{inst} (broker {broker:.2f})"

    out = [
        Row(
            f"scale: account events ({r['accounts']:,} accounts, 12 partitions)",
            float(one["events"]),
            "",
        ),
        Row("1 instance: thaw -> all applied (best round)", float(one["msgs_per_s"]), "msgs/s"),
        Row(f"  rounds: {_rates(one)}; resolution", 1000 * float(one["resolution_s"]), "ms"),
        Row(f"  cores busy: {cores(one)}", float(sum(one["instance_cores"])), "cores"),
        Row("2 instances: thaw -> all applied (sum)", float(two["msgs_per_s"]), "msgs/s"),
        Row(f"  rounds: {_rates(two)}; resolution", 1000 * float(two["resolution_s"]), "ms"),
        Row(f"  cores busy: {cores(two)}", float(sum(two["instance_cores"])), "cores"),
    ]
    out += [
        Row(f"  events applied by instance {k + 1} of 2", float(n), "")
        for k, n in enumerate(two["applied_per_instance"])
    ]
    per_core = [float(p["msgs_per_s"]) / max(1e-9, sum(p["instance_cores"])) for p in (one, two)]
    out += [
        Row("msgs per busy core-second: 1 instance", per_core[0], "msgs/s"),
        Row("msgs per busy core-second: 2 instances", per_core[1], "msgs/s"),
    ]
    out.append(
        Row(
            f"2 / 1 instances ({r['cores']} cores, broker included)",
            float(r["ratio"]),
            "x",
            "close to 2x",
        )
    )
    return out


__all__ = [
    "bench_scale",
    "bench_scale_async",
    "cpu_seconds",
    "parse_metrics",
    "rows",
    "settled",
    "stat_cpu_seconds",
]
