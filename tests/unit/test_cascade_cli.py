"""Shock parsing, the [market] settings and ``monitor stress``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monitor.cascade import MarketConfig, parse_scenario, parse_shock
from monitor.cli import main
from monitor.errors import ConfigError
from monitor.instruments import RiskParams, load_instruments


@pytest.fixture(scope="module")
def params() -> RiskParams:
    return load_instruments()


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("BTC=-10%", ("BTC", -0.10)),
        ("BTC=-0.1", ("BTC", -0.1)),
        ("eth=+5%", ("ETH", 0.05)),
        (" SOL = -12.5% ", ("SOL", -0.125)),
    ],
)
def test_shocks_are_percentages_or_fractions(params: RiskParams, text: str, want: object) -> None:
    u, x = parse_shock(text, params)
    assert (u, x) == (want[0], pytest.approx(want[1]))  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("XBT=-10%", "unknown underlying 'XBT' (known: BTC, ETH"),
        ("BTC", "expected UNDERLYING=MOVE"),
        ("BTC=ten%", "is not a number"),
        ("BTC=-100%", "above -100%"),
        ("BTC=-10", "did you mean -10%?"),
        ("BTC=nan", "finite"),
    ],
)
def test_a_bad_shock_names_itself_and_says_why(params: RiskParams, text: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_shock(text, params)
    assert repr(text) in str(e.value)
    assert says in str(e.value)


def test_a_scenario_joins_shocks_and_refuses_an_underlying_twice(params: RiskParams) -> None:
    sc = parse_scenario("BTC=-10%,ETH=-5%", params)
    assert sc.label == "BTC=-10%,ETH=-5%"
    assert sc.as_dict() == {"BTC": pytest.approx(-0.1), "ETH": pytest.approx(-0.05)}
    with pytest.raises(ConfigError, match="shocked twice"):
        parse_scenario(["BTC=-10%", "BTC=-5%"], params)


def test_market_config_defaults_and_validation(params: RiskParams) -> None:
    cfg = MarketConfig()
    assert [s.label for s in cfg.scenarios(params)] == ["BTC=-10%", "ETH=-10%"]
    assert cfg.map_moves == (-0.2, -0.1, -0.05, -0.02, -0.01, 0.01, 0.02, 0.05, 0.1, 0.2)
    assert MarketConfig(shocks=["SOL=-20%"], map_moves=[0.1]).shocks == ("SOL=-20%",)  # type: ignore[arg-type]
    for kw, key in (
        ({"impact": "cubic"}, "market.impact"),
        ({"max_rounds": 0}, "market.max_rounds"),
        ({"map_interval_s": 0}, "market.map_interval_s"),
        ({"cascade_notional_threshold": -1.0}, "market.cascade_notional_threshold"),
        ({"map_moves": (0.0,)}, "market.map_moves"),
        ({"shocks": "BTC=-10%"}, "market.shocks"),
    ):
        with pytest.raises(ConfigError, match=key):
            MarketConfig(**kw)
    with pytest.raises(ConfigError, match=r"market\.shocks: shock 'DOT=-10%'"):
        MarketConfig(shocks=("DOT=-10%",)).scenarios(params)


# Default instruments: BTC-PERP 0.4% below 50,000 notional, ETH-PERP 0.5% below 50,000.
# A: 9,000 USDT, long 2 BTC @ 64,000 (notional 128,000: 0.5%, MM 640 - 50000*0.001 = 590)
#    and long 20 ETH @ 2,900 at 3,000 (+2,000). At BTC -10%: E = 9000 - 12800 + 2000 < 0.
# B: 6,000 USDT, long 30 ETH @ 3,000 (notional 90,000). C: short 3 ETH with 1,000 USDT.
BOOK = """\
{"type":"tick","symbol":"BTC-PERP","price":64000.0,"ts":1}
{"type":"tick","symbol":"ETH-PERP","price":3000.0,"ts":1}
{"type":"balance","account":"A","asset":"USDT","amount":9000.0,"ts":2}
{"type":"position","account":"A","symbol":"BTC-PERP","qty":2,"entry_price":64000.0,"ts":2}
{"type":"position","account":"A","symbol":"ETH-PERP","qty":20,"entry_price":2900.0,"ts":2}
{"type":"balance","account":"B","asset":"USDT","amount":6000.0,"ts":2}
{"type":"position","account":"B","symbol":"ETH-PERP","qty":30,"entry_price":3000.0,"ts":2}
{"type":"balance","account":"C","asset":"USDT","amount":1000.0,"ts":2}
{"type":"position","account":"C","symbol":"ETH-PERP","qty":-3,"entry_price":3000.0,"ts":2}
"""


@pytest.fixture
def book_file(tmp_path: Path) -> Path:
    p = tmp_path / "book.jsonl"
    p.write_text(BOOK)
    return p


def test_stress_shock_json(book_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stress", str(book_file), "--shock", "BTC=-10%", "--json", "--accounts"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["shocks"] == {"BTC": -0.1}
    r0 = doc["rounds"][0]
    assert r0["accounts"] == ["A"]
    # A closes 2 BTC at 57,600 and 20 ETH at 3,000.
    assert r0["notional_liquidated"]["BTC-PERP"] == pytest.approx(115200.0)
    assert r0["notional_liquidated"]["ETH-PERP"] == pytest.approx(60000.0)
    assert r0["healthy_notional_destroyed"]["ETH-PERP"] == pytest.approx(60000.0)
    # E = 9000 + 2*(57600-64000) + 20*(3000-2900) = -1800: bad debt.
    assert r0["bad_debt"] == pytest.approx(1800.0)
    assert doc["spillover"]["BTC"]["ETH"] == pytest.approx(60000.0)


def test_stress_shock_table(book_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["stress", str(book_file), "--shock", "BTC=-10%", "--shock", "ETH=-1%",
            "--impact", "sqrt", "--max-rounds", "3"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Cascade: BTC=-10%,ETH=-1% (impact sqrt, at most 3 rounds)" in out
    # A: E = 9000 + 2*(57600-64000) + 20*(2970-2900) = -2400.
    assert "Spill-over" in out and "amplification:" in out and "bad debt: 2.40k" in out


def test_stress_map_json_and_table(book_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stress", str(book_file), "--map", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["moves"]) == 61
    btc = doc["underlyings"]["BTC"]
    k = doc["moves"].index(-0.1)
    assert btc["accounts"][k] == 1
    # A at BTC -10%: 2 * 57,600 + 20 * 3,000.
    assert btc["notional"][k] == pytest.approx(175200.0)
    assert main(["stress", str(book_file), "--map", "--max-move", "10", "--step", "5"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:3] == ["move", "BTC", "ETH"]
    assert [line.split()[0] for line in out.splitlines()[2:7]] == ["-10%", "-5%", "0%", "+5%",
                                                                   "+10%"]  # fmt: skip


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--shock", "XBT=-10%"], "unknown underlying 'XBT'"),
        (["--shock", "BTC=-10", "--json"], "did you mean -10%?"),
        ([], "one of the arguments --map --shock is required"),
        (["--map", "--shock", "BTC=-1%"], "not allowed with argument"),
        (["--shock", "BTC=-1%", "--max-rounds", "0"], "must be >= 1"),
        (["--shock", "BTC=-1%", "--impact", "cubic"], "invalid choice"),
        (["--map", "--max-move", "10", "--step", "3"], "not a whole number of --step"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    book_file: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    try:
        code = main(["stress", str(book_file), *argv])
    except SystemExit as e:
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert code == 2
    assert says in err
    assert len(err.strip().splitlines()) == 1


def test_rejected_lines_are_reported_and_fail_only_with_strict(
    book_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book_file.write_text(BOOK + "not json\n")
    assert main(["stress", str(book_file), "--shock", "BTC=-1%"]) == 0
    assert "1 lines rejected: line 10 (malformed_json)" in capsys.readouterr().err
    assert main(["stress", str(book_file), "--shock", "BTC=-1%", "--strict"]) == 1


@pytest.mark.parametrize("argv", [["--help"], ["stress", "--help"]])
def test_help_lists_and_explains_the_command(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "stress" in out and "liquidation" in out
