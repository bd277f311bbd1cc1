"""`monitor stress --from-kafka` against a real broker: the group view of the
partials on the topic."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest

from monitor.cascade import liquidation_map, take_snapshot
from monitor.cascade.partial import partial_market, to_wire
from monitor.cli import main
from monitor.clock import WallClock
from tests.support.tansu import TansuBroker, Topics, create_topics, produce
from tests.unit.test_cascade_engine import book_of, params
from tests.unit.test_group_market import PRICES, _two_underlying_book

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as b:
        yield b


def test_stress_from_kafka_merges_the_latest_partial_of_every_instance(
    broker: TansuBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = params()
    rng = np.random.default_rng(11)
    halves = [_two_underlying_book(rng, "x", 50), _two_underlying_book(rng, "y", 50)]
    now = WallClock().now_ms()
    parts = [
        partial_market(take_snapshot(book_of(p, PRICES + h)), instance=f"i{k}",
                       partitions=[k], created_ms=now)
        for k, h in enumerate(halves)
    ]  # fmt: skip
    # An instance that stopped cleanly: its key was cleared by a tombstone.
    gone = partial_market(take_snapshot(book_of(p, PRICES)), instance="gone", created_ms=now)
    t = Topics.fresh()
    asyncio.run(create_topics(broker.bootstrap, [t.partials]))
    messages: list[tuple[bytes | None, bytes | None]] = [
        (b"gone", to_wire(gone)), (b"i0", to_wire(parts[0])), (b"i1", to_wire(parts[1])),
        (b"gone", None),
    ]  # fmt: skip
    asyncio.run(produce(broker.bootstrap, t.partials, messages))  # type: ignore[arg-type]  # tombstones
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(f'[topics]\npartials = "{t.partials}"\n')
    instruments = tmp_path / "instruments.toml"
    instruments.write_text(HAND_TOML)

    common = ["stress", "--from-kafka", "--bootstrap", broker.bootstrap, "--config", str(cfg),
              "--instruments", str(instruments), "--json"]  # fmt: skip
    assert main([*common, "--map"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["instances"] == ["i0", "i1"]
    whole = liquidation_map(take_snapshot(book_of(p, PRICES + halves[0] + halves[1])))
    for k, u in enumerate(whole.underlyings):
        assert doc["underlyings"][u]["accounts"] == whole.accounts[k].tolist()

    assert main([*common, "--shock", "BTC=-10%"]) == 0
    doc = orjson.loads(capsys.readouterr().out)
    lo, hi = doc["bounds"]["lower"], doc["bounds"]["upper"]
    assert lo["accounts_liquidated"] <= hi["accounts_liquidated"]
    assert lo["rounds"][0]["moves"]["BTC"] == pytest.approx(-0.1)


def test_stress_from_kafka_says_when_the_topic_holds_nothing(
    broker: TansuBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    t = Topics.fresh()
    asyncio.run(create_topics(broker.bootstrap, [t.partials]))
    cfg = tmp_path / "monitor.toml"
    cfg.write_text(f'[topics]\npartials = "{t.partials}"\n')
    rc = main(["stress", "--from-kafka", "--bootstrap", broker.bootstrap, "--config", str(cfg),
               "--map"])  # fmt: skip
    assert rc == 2
    assert "holds no readable partial" in capsys.readouterr().err


HAND_TOML = """
[assets.USDT]
price = 1.0
[assets.BTC]
price_symbol = "BTC"
haircut = 0.1
[instruments."BTC-PERP"]
underlying = "BTC"
brackets = [[0, 0.05]]
depth_usd = 9000.0
impact_k = 0.5
[instruments."ETH-PERP"]
underlying = "ETH"
brackets = [[0, 0.05]]
depth_usd = 10000.0
impact_k = 0.5
"""
