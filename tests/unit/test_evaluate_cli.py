"""`monitor evaluate`: the final state of every account as one JSON document."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
import zstandard

EVENTS = b"""\
{"type":"balance","account":"A1","asset":"USDT","amount":10000.0,"ts":1700000000300}
{"type":"position","account":"A1","symbol":"BTC-PERP","qty":-1.5,"entry_price":65000.0,"ts":1700000000200,"sub_account":"desk-1"}

{"type":"tick","symbol":"BTC-PERP","price":64000.5,"ts":1700000000123}
{"type":"tick","symbol":"BTC-PERP","price":-1,"ts":1700000000124}
not json
"""


def evaluate(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "monitor", "evaluate", *args],
        capture_output=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_evaluate_prints_accounts_rejections_and_summary(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"events{suffix}"
    data = EVENTS
    if suffix.endswith(".gz"):
        data = gzip.compress(EVENTS)
    elif suffix.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(EVENTS)
    path.write_bytes(data)
    out = evaluate(str(path))
    assert out.returncode == 0, out.stderr
    doc = orjson.loads(out.stdout)
    (acct,) = doc["accounts"]
    assert acct["account"] == "A1"
    assert acct["wallet_balance"] == 10000.0
    assert acct["unrealized_pnl"] == pytest.approx(-1.5 * (64000.5 - 65000.0))
    (p,) = acct["positions"]
    assert p["sub_account"] == "desk-1"
    assert p["margin_mode"] == "cross"
    # 96000.75 notional: bracket [50000, 0.5%], cum 50
    assert p["maintenance_margin"] == pytest.approx(96000.75 * 0.005 - 50)
    assert p["contagion_shift"] == 0.0  # the only position: nothing else pulls it
    assert set(p) >= {
        "symbol",
        "qty",
        "entry_price",
        "mark_price",
        "notional",
        "unrealized_pnl",
        "mmr",
        "maintenance_amount",
        "liquidation_price",
        "standalone_liquidation_price",
        "healthy",
    }
    assert doc["rejected"] == [
        {"line": 5, "reason": "non_positive_price", "detail": "price -1.0 for BTC-PERP"},
        {"line": 6, "reason": "malformed_json", "detail": doc["rejected"][1]["detail"]},
    ]
    assert doc["summary"] == {"events": 5, "accounts": 1, "positions": 1, "rejected": 2}


def test_strict_mode_exits_1_on_any_rejection(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(EVENTS)
    assert evaluate(str(path), "--strict").returncode == 1


def test_unreadable_input_or_bad_config_exit_2_with_one_line(tmp_path: Path) -> None:
    out = evaluate(str(tmp_path / "missing.jsonl"))
    assert out.returncode == 2
    assert out.stderr.decode().count("\n") == 1 and "missing.jsonl" in out.stderr.decode()
    bad = tmp_path / "bad.toml"
    bad.write_text("[instruments.X]\nunderlying='X'\nbrackets=[[0, 2]]\n")
    path = tmp_path / "e.jsonl"
    path.write_bytes(EVENTS)
    out = evaluate(str(path), "--instruments", str(bad))
    assert out.returncode == 2
    assert "bad.toml" in out.stderr.decode() and "maintenance rate" in out.stderr.decode()


def test_infinite_margin_ratio_is_null_and_liquidatable(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(
        b'{"type":"balance","account":"B","asset":"USDT","amount":100,"ts":1}\n'
        b'{"type":"position","account":"B","symbol":"ETH-PERP","qty":1,"entry_price":3000,"ts":1}\n'
        b'{"type":"tick","symbol":"ETH-PERP","price":2800,"ts":2}\n'
    )
    doc = orjson.loads(evaluate(str(path)).stdout)
    acct = doc["accounts"][0]
    assert acct["equity"] == pytest.approx(-100.0)
    assert acct["margin_ratio"] is None
    assert acct["status"] == "liquidatable"


def _damaged(kind: str) -> bytes:
    """A compressed copy of many events, cut short or garbled inside the stream (zstd
    written with a content checksum, as the zstd tool does by default)."""
    line = b'{"type":"tick","symbol":"BTC-PERP","price":%d.5,"ts":%d}\n'
    body = b"".join(line % (60000 + i, 1700000000000 + i) for i in range(3000))
    if kind.endswith("gz"):
        data = gzip.compress(body)
    else:
        data = zstandard.ZstdCompressor(write_checksum=True).compress(body)
    if kind.startswith("truncated"):
        return data[: len(data) // 2]
    garbled = bytearray(data)
    for i in range(30, 60):
        garbled[i] ^= 0xFF
    return bytes(garbled)


@pytest.mark.parametrize("kind", ["truncated-gz", "corrupt-gz", "truncated-zst", "corrupt-zst"])
def test_a_damaged_compressed_file_exits_2_with_one_line_naming_it(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / f"{kind}.jsonl.{kind.split('-')[1]}"
    path.write_bytes(_damaged(kind))
    out = evaluate(str(path))
    err = out.stderr.decode()
    assert out.returncode == 2, err
    assert err.count("\n") == 1 and path.name in err and "corrupt or truncated" in err
    assert "Traceback" not in err


def test_an_out_of_range_ts_is_reported_as_a_bad_value_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_bytes(
        b'{"type":"balance","account":"C","asset":"USDT","amount":100,"ts":1}\n'
        b'{"type":"tick","symbol":"ETH-PERP","price":2800,"ts":18446744073709551616}\n'
        b'{"type":"position","account":"C","symbol":"ETH-PERP","qty":1,"entry_price":3000,'
        b'"ts":9223372036854775808}\n'
        b'{"type":"balance","account":"C","asset":"USDT","amount":5,"ts":1000000000000000000}\n'
    )
    out = evaluate(str(path))
    assert out.returncode == 0, out.stderr
    doc = orjson.loads(out.stdout)
    assert [(r["line"], r["reason"]) for r in doc["rejected"]] == [
        (2, "bad_value"),
        (3, "bad_value"),
        (4, "bad_value"),
    ]
    assert all("$.ts" in r["detail"] for r in doc["rejected"])
    (acct,) = doc["accounts"]
    assert acct["wallet_balance"] == 100.0 and acct["positions"] == []
