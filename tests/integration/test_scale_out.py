"""Scale-out: several `monitor run` processes in one consumer group, a continuous
stream, one instance SIGKILLed and a new one started mid-stream.

Afterwards the partition snapshots in the shared state directory (the union of
the instances' books) equal a from-scratch evaluation of every event, the live
instances own disjoint partitions covering all of them (so no account is
owned twice), and every account the stream leaves at WARNING or worse had a
firing margin alert delivered to the alerts topic at least once.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

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

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]
PARTITIONS = 12


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as b:
        yield b


def config(path: Path, bootstrap: str, t: Topics, state: Path, port: int, instance: str) -> Path:
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
snapshot_interval_s = 0.5

[instance]
id = "{instance}"

[market]
map_interval_s = 1.0
"""
    )
    return path


class Instance:
    def __init__(self, name: str, tmp: Path, bootstrap: str, t: Topics, state: Path) -> None:
        self.name = name
        self.port = free_port()
        cfg = config(tmp / f"{name}.toml", bootstrap, t, state, self.port, name)
        self.log = tmp / f"{name}.log"
        self.proc = Proc(cfg, self.log, self.port)

    async def ready(self) -> dict[str, object] | None:
        status, body = await get(self.port, "/readyz")
        if status != 200:
            return None
        out: dict[str, object] = orjson.loads(body)
        return out


def chunks(work: Workload, n: int) -> list[Workload]:
    out = []
    for k in range(n):
        p0, p1 = len(work.prices) * k // n, len(work.prices) * (k + 1) // n
        e0, e1 = len(work.events) * k // n, len(work.events) * (k + 1) // n
        out.append(Workload(work.prices[p0:p1], work.events[e0:e1]))
    return out


async def test_instances_share_the_partitions_and_survive_a_kill_and_a_newcomer(
    broker: TansuBroker, tmp_path: Path
) -> None:
    t = Topics.fresh()
    await create_topics(broker.bootstrap, [t.account_events], partitions=PARTITIONS)
    await create_topics(broker.bootstrap, [t.prices, t.alerts, t.dlq, t.partials], partitions=3)
    state = tmp_path / "state"  # shared by every instance
    work = make_workload(accounts=120, ticks=3000, events=6000, seed=21)
    parts = chunks(work, 12)
    live = {n: Instance(n, tmp_path, broker.bootstrap, t, state) for n in ("s-0", "s-1", "s-2")}
    killed: Instance | None = None

    async def feed(k: int) -> None:
        await produce(broker.bootstrap, t.account_events, parts[k].events, partitions=PARTITIONS)
        await produce(broker.bootstrap, t.prices, parts[k].prices, partitions=3)

    async def owned() -> dict[str, list[int]] | None:
        out = {}
        for name, inst in live.items():
            r = await inst.ready()
            if r is None:
                return None
            out[name] = list(r["partitions"])  # type: ignore[call-overload]
        return out

    async def settled() -> bool:
        o = await owned()
        if o is None or not all(o.values()):
            return False
        flat = [p for ps in o.values() for p in ps]
        return sorted(flat) == list(range(PARTITIONS))

    try:
        for k in range(4):
            await feed(k)
        await wait_until(settled, 60, "three instances sharing the partitions")
        for k in range(4, 7):
            await feed(k)
            await asyncio.sleep(0.3)
        # One instance dies mid-stream; a newcomer joins while the stream goes on.
        killed = live.pop("s-1")
        killed.proc.signal(signal.SIGKILL)
        assert killed.proc.wait(10) == -signal.SIGKILL
        live["s-3"] = Instance("s-3", tmp_path, broker.bootstrap, t, state)
        for k in range(7, 12):
            await feed(k)
            await asyncio.sleep(0.3)

        def durable() -> int:
            try:
                union = StateDir(state, "s-0").read_union(t.account_events)
            except StateError:
                return -1  # a file being replaced right now: look again
            return sum(o for (tp, _), o in union.offsets.items() if tp == t.account_events)

        async def caught_up() -> bool:
            # settled, and every produced event is in the snapshots on disk
            return await settled() and durable() == len(work.events)

        await wait_until(caught_up, 90, "the group to settle and catch up")
        final = await owned()
        assert final is not None
        accounts = 0
        for inst in live.values():
            _, text = await get(inst.port, "/metrics")
            accounts += int(metric(text, "monitor_accounts"))
        for inst in live.values():
            inst.proc.signal(signal.SIGTERM)
        for inst in live.values():
            assert inst.proc.wait(40) == 0, inst.log.read_text()[-3000:]
    finally:
        for inst in [*live.values(), *([killed] if killed else [])]:
            inst.proc.kill()

    params = load_instruments()
    want, _ = reference_book(params, work)
    # Disjoint ownership covering every partition, and each account counted once.
    flat = sorted(p for ps in final.values() for p in ps)
    assert flat == list(range(PARTITIONS))
    assert accounts == want.n_accounts
    # The union of the partition snapshots is the from-scratch book.
    union = StateDir(state, "s-0").read_union(t.account_events)
    assert sum(o for (tp, _), o in union.offsets.items() if tp == t.account_events) == len(
        work.events
    )
    assert_same_book(restore(union, params), want)
    # The newcomer started from snapshots someone else wrote, not from scratch.
    assigned = [
        orjson.loads(line)
        for line in live["s-3"].log.read_text().splitlines()
        if line.startswith("{") and '"event": "assigned"' in line
    ]
    assert assigned and any(a["loaded"] for a in assigned), assigned
    # At-least-once alerts: every account left at WARNING or worse was alerted.
    alerts = await consume_all(broker.bootstrap, t.alerts, 10**6, timeout_s=3.0)
    firing = set()
    for rec in alerts:
        a = orjson.loads(rec.value)
        if a.get("kind") == "margin" and a.get("state") == "firing":
            firing.add(a["account"])
    at_risk = {want.account_ids[a] for a in range(want.n_accounts) if want.status[a] > 0}
    assert at_risk, "the stream is meant to leave some accounts at risk"
    assert at_risk <= firing
