"""The replay report renders in a real browser (headless Debian Chromium)
with every plot present and not blank."""

from __future__ import annotations

import asyncio
import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from monitor.alerts.config import AlertsConfig
from monitor.demo.scenarios import SCENARIOS
from monitor.instruments import load_instruments
from monitor.replay import Replay, ReplayOptions
from monitor.report import write_report

IMG = re.compile(rb'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
PLOTS = {
    "price paths",
    "accounts by status",
    "healthy notional at risk",
    "margin-ratio distribution",
    "liquidation map",
}


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Debian chromium is not installed: `make test` installs it (make system-deps)")


def _varied(img: np.ndarray) -> bool:
    """More than one colour, and not almost all of it one colour."""
    px = img[..., :3].reshape(-1, 3)
    if px.shape[0] == 0:
        return False
    _, counts = np.unique(np.round(px, 2), axis=0, return_counts=True)
    return bool(counts.size > 8 and counts.max() < 0.995 * px.shape[0])


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sc = SCENARIOS["crash-2021-05-19"]
    result = asyncio.run(
        Replay(
            load_instruments(),
            ReplayOptions((sc.book_path(), sc.ticks_path()), keep_worst=True),
            alerts_config=AlertsConfig(stale_price_s=sc.stale_price_s),
        ).run()
    )
    return write_report(result, tmp_path_factory.mktemp("report"), title=sc.title)


def test_the_report_embeds_every_plot_as_a_non_blank_png(report: Path) -> None:
    html = report.read_bytes()
    found = {alt.decode(): data for alt, data in IMG.findall(html)}
    assert set(found) == PLOTS
    for alt, data in found.items():
        img = imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert img.shape[0] > 100 and img.shape[1] > 300, alt
        assert _varied(img), alt
    assert b"<table" in html and b"Largest contagion events" in html
    assert b"http://" not in html and b"https://" not in html  # self-contained


@pytest.mark.timeout(180)
def test_headless_chromium_renders_the_report_with_its_images(report: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    shot = tmp_path / "report.png"
    cmd = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
        "--window-size=1400,3000", report.as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=150)
    img = imread(str(shot))
    assert img.shape[0] >= 3000 and img.shape[1] >= 1400
    assert _varied(img)
    # the plots are drawn: the page holds the plot colours, not only text on white
    rgb = img[..., :3]
    reds = (rgb[..., 0] > 0.6) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)
    blues = (rgb[..., 2] > 0.5) & (rgb[..., 0] < 0.4)
    assert reds.sum() > 500 and blues.sum() > 500
    # the figures fill most of the page height (axes, ticks, lines: not blank bands)
    non_white = (rgb < 0.97).any(axis=2).mean(axis=1)
    assert (non_white > 0.01).sum() > 1500
