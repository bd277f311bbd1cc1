"""The instruments file is validated strictly, naming file, key and problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.instruments import load_instruments
from monitor.instruments.model import derive_brackets

GOOD = """
[assets.USDT]
price = 1.0
[assets.BTC]
price_symbol = "BTC"
haircut = 0.05
[instruments."BTC-PERP"]
underlying = "BTC"
brackets = [[0, 0.004], [50000, 0.005], [250000, 0.01], [1000000, 0.025]]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "instruments.toml"
    p.write_text(text)
    return p


def test_the_bundled_instruments_load_with_the_required_symbols() -> None:
    params = load_instruments()
    for sym in ("BTC-PERP", "ETH-PERP", "SOL-PERP"):
        assert sym in params.symbol_id
    for asset in ("USDT", "USDC", "BTC", "ETH"):
        assert asset in params.asset_id


def test_config_dir_holds_the_bundled_instruments_file() -> None:
    from monitor.instruments.load import default_instruments_path

    assert (
        Path("config/instruments.toml").resolve().read_bytes()
        == default_instruments_path().read_bytes()
    )


def test_a_good_file_derives_maintenance_amounts(tmp_path: Path) -> None:
    params = load_instruments(write(tmp_path, GOOD))
    cums = [b.cum for b in params.instrument("BTC-PERP").brackets]
    # 50000*(0.005-0.004)=50; 50 + 250000*(0.01-0.005)=1300; 1300 + 1e6*(0.025-0.01)=16300
    assert cums == [0.0, 50.0, 1300.0, 16300.0]  # exact, not approximately


@pytest.mark.parametrize(
    ("pairs", "cums"),
    [
        # in binary floating point: 24.999999999999996, 49.99999999999999, 1299.9999999999998
        ([(0, 0.01), (5000, 0.015)], [0.0, 25.0]),
        ([(0, 0.004), (50000, 0.005)], [0.0, 50.0]),
        ([(0, 0.004), (50000, 0.005), (250000, 0.01)], [0.0, 50.0, 1300.0]),
        ([(0, 0.0065), (10000.5, 0.0133)], [0.0, 68.0034]),
    ],
)
def test_maintenance_amounts_are_exact_in_the_decimals_configured(
    pairs: list[tuple[float, float]], cums: list[float]
) -> None:
    assert [b.cum for b in derive_brackets(pairs)] == cums


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("haircut = 0.05", "haircut = 0.05\nhaircat = 1", "assets.BTC.haircat: unknown key"),
        ("[[0, 0.004], [50000", "[[10, 0.004], [50000", "first floor must be 0"),
        ("[250000, 0.01]", "[40000, 0.01]", "floors must be ascending"),
        ("[1000000, 0.025]", "[1000000, 1.5]", "maintenance rate must be in (0, 1)"),
        ("haircut = 0.05", "haircut = 1.0", "assets.BTC.haircut: must be in [0, 1)"),
        ('underlying = "BTC"', "", "instruments.BTC-PERP.underlying: required"),
        ("price = 1.0", 'price = "one"', "assets.USDT.price: expected a number"),
    ],
)
def test_a_bad_file_fails_at_load_naming_file_key_and_problem(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as exc:
        load_instruments(path)
    assert str(path) in str(exc.value)
    assert message in str(exc.value)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_instruments(tmp_path / "nope.toml")
