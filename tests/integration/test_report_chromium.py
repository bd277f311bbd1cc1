"""The replay report renders in a real browser (headless Debian Chromium)
with every plot present and not blank: each image loaded by the browser
itself (its natural size, and its decoded pixels read back from a canvas),
and the page as a whole in a screenshot."""

from __future__ import annotations

import asyncio
import base64
import io
import json
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


# Run in the page once everything has loaded: every image's natural size and, from
# its decoded pixels drawn on a canvas, how many colours it has (5 bits a channel)
# and the share of the commonest; written into the DOM for --dump-dom to print.
CHECK = b"""<script>
window.addEventListener("load", () => {
  const out = [];
  for (const img of document.images) {
    const w = img.naturalWidth, h = img.naturalHeight;
    let colours = 0, top = 1;
    if (img.complete && w && h) {
      const c = document.createElement("canvas");
      c.width = w;
      c.height = h;
      const g = c.getContext("2d");
      g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, w, h).data;
      const seen = new Map();
      for (let i = 0; i < d.length; i += 4) {
        const k = ((d[i] >> 3) << 10) | ((d[i + 1] >> 3) << 5) | (d[i + 2] >> 3);
        seen.set(k, (seen.get(k) || 0) + 1);
      }
      colours = seen.size;
      top = Math.max(...seen.values()) / (w * h);
    }
    out.push({alt: img.alt, complete: img.complete, width: w, height: h, colours, top});
  }
  const pre = document.createElement("pre");
  pre.id = "image-check";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""
CHECKED = re.compile(rb'<pre id="image-check">(.*?)</pre>', re.S)


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (40, 400)) -> str:
    """A PNG of one colour, base64 (a blank image for the control)."""
    from matplotlib.image import imsave

    buf = io.BytesIO()
    imsave(buf, np.full((*size, 3), colour, dtype=np.uint8), format="png")
    return base64.b64encode(buf.getvalue()).decode()


def _chromium_args(chromium: str, profile: Path) -> list[str]:
    return [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={profile}",
    ]  # fmt: skip


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
    assert b"Not available" not in html
    # the crash prices BTC only and no account holds DOGE or HYPE: their flat lines
    # (and USDC's, a collateral at a fixed price) are left out of the map
    assert (
        b"Not drawn (no positions on them and no ticks of their prices): DOGE, HYPE, USDC" in html
    )
    assert b"http://" not in html and b"https://" not in html  # self-contained


@pytest.mark.timeout(180)
def test_headless_chromium_loads_every_image_of_the_report_and_none_is_blank(
    report: Path, tmp_path: Path
) -> None:
    chromium = _chromium()
    # two controls show the check can fail: an image that does not decode, a blank one
    controls = (
        '<img alt="control: broken" src="data:image/png;base64,iVBORw0KGgoAAAA">'
        f'<img alt="control: blank" src="data:image/png;base64,{_png((255, 255, 255))}">'
    ).encode()
    page = tmp_path / "checked.html"
    page.write_bytes(report.read_bytes().replace(b"</body>", controls + CHECK + b"</body>"))
    cmd = [*_chromium_args(chromium, tmp_path / "profile"), "--dump-dom", page.as_uri()]
    dom = subprocess.run(cmd, check=True, capture_output=True, timeout=150).stdout
    found = CHECKED.search(dom)
    assert found is not None, "the check did not run in the page"
    images = {i["alt"]: i for i in json.loads(found.group(1))}
    assert set(images) == PLOTS | {"control: broken", "control: blank"}
    for alt in PLOTS:
        i = images[alt]
        assert i["complete"] and i["width"] > 300 and i["height"] > 100, i
        assert i["colours"] > 8 and i["top"] < 0.995, i  # drawn, not one flat colour
    assert images["control: broken"]["width"] == 0
    assert images["control: blank"]["width"] == 400 and images["control: blank"]["colours"] == 1


@pytest.mark.timeout(180)
def test_headless_chromium_renders_the_report_with_its_images(report: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    shot = tmp_path / "report.png"
    cmd = [*_chromium_args(chromium, tmp_path / "profile"), f"--screenshot={shot}",
           "--window-size=1400,3000", report.as_uri()]  # fmt: skip
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
