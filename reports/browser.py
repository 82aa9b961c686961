"""Headless Chromium for report checks: render a page offline and return its DOM or a screenshot."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(page: Path, extra: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                exe,
                *FLAGS,
                f"--user-data-dir={profile}",
                "--virtual-time-budget=10000",
                *extra,
                page.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )


def rendered_dom(page: Path, timeout_s: float = 120) -> str:
    """The DOM after the page's scripts ran (plotly draws its SVG then)."""
    return _run(page, ["--dump-dom"], timeout_s).stdout


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 2400, timeout_s: float = 120) -> Path:
    _run(
        page,
        [f"--screenshot={png.resolve()}", f"--window-size={width},{height}", "--hide-scrollbars"],
        timeout_s,
    )
    return png
