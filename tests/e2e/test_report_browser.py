"""The run report renders in a real browser: headless Chromium (Debian's ``chromium``) opens it
offline, takes a screenshot, and logs no console errors or failed resource loads."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from precise_mrd.core.simulate import SimulationParams
from precise_mrd.pipeline.params import PipelineParams
from precise_mrd.pipeline.run import RunInputs, run_pipeline
from precise_mrd.pipeline.simulation import simulate_sample

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
    "--window-size=1200,2000",
]
CONSOLE_LINE = re.compile(r":CONSOLE[^\]]*\]\s*(.*)")


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "headless Chromium is required (apt-get install chromium; .ci/run installs it)"
    return path


def screenshot(page: Path, png: Path, profile: Path) -> list[str]:
    """Open ``page`` in headless Chromium, write ``png``; return the console messages."""
    completed = subprocess.run(
        [
            _chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--screenshot={png}",
            page.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    return [m.group(1) for m in map(CONSOLE_LINE.search, completed.stderr.splitlines()) if m]


@pytest.fixture(scope="module")
def report_path(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("report")
    sample = simulate_sample(
        root / "sample", SimulationParams.preset("smoke", seed=4, tumor_fraction=0.02)
    )
    inputs = RunInputs(
        reference_path=sample.reference_path,
        variants_path=sample.vcf_path,
        bam_path=sample.bam_path,
    )
    return run_pipeline(inputs, PipelineParams(seed=4), root / "run").out_dir / "report.html"


@pytest.mark.browser
def test_report_renders_offline_without_console_errors(report_path: Path, tmp_path: Path) -> None:
    html = report_path.read_text()
    assert "http://" not in html and "https://" not in html, "report must not load anything remote"
    png = tmp_path / "report.png"
    messages = screenshot(report_path, png, tmp_path / "profile")
    assert png.stat().st_size > 50_000, "screenshot is suspiciously small (blank page?)"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert messages == [], messages
    assert (
        html.count("data:image/png;base64,") >= 4
    )  # profile, per-variant, family sizes, background


@pytest.mark.browser
def test_the_browser_check_catches_a_broken_page(tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    broken.write_text("<html><body><script>notDefined();</script></body></html>")
    messages = screenshot(broken, tmp_path / "broken.png", tmp_path / "profile")
    assert any("notDefined" in message for message in messages)


def _layout_of(page: Path, profile: Path) -> dict[str, str]:
    """Lay ``page`` out in headless Chromium (1200 px wide) and return what a probe script saw."""
    probe = page.with_name("probe.html")
    script = (
        "<script>const t = document.querySelector('div.scroll table');"
        "document.body.dataset.pageOverflow = String("
        "document.documentElement.scrollWidth > window.innerWidth);"
        "document.body.dataset.tableOverflow = String(t.scrollWidth > t.parentElement.clientWidth);"
        "</script></body>"
    )
    probe.write_text(page.read_text().replace("</body>", script))
    completed = subprocess.run(
        [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", probe.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    found = re.search(
        r'<body data-page-overflow="(\w+)" data-table-overflow="(\w+)"', completed.stdout
    )
    assert found, completed.stdout[:500]
    return {"page": found.group(1), "table": found.group(2)}


@pytest.mark.browser
def test_the_variant_table_fits_the_page_width(report_path: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(report_path.read_text())
    assert _layout_of(page, tmp_path / "profile") == {"page": "false", "table": "false"}


def test_the_background_plot_says_which_rates_are_the_prior(report_path: Path) -> None:
    html = report_path.read_text()
    assert "classes with fewer than one error expected, whose rate is the prior" in html
    assert re.search(r"duplex: \d+ of 96 classes measured, \d+ from the prior", html)
