"""The report screenshots in docs/img/ (docs/reports.md), made the way a user makes the pages.

    python examples/report_screenshots.py     # -> docs/img/compare_report.png, docs/img/run_report.png

Runs the paper workload (workloads/fastcar_vilau7b_u280.yaml) three times through the CLI in a temporary
directory: as shipped (DRS on, 50% replay), with DRS off, and at an 80% replay target; compares the
three with ``python -m cosim compare``; and photographs the comparison and the first run's report with
headless Chromium (reports/browser.py). Each PNG is cut below the page's last content and stored with a
palette, which keeps it well under 500 KB.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reports.browser import chromium, screenshot  # noqa: E402

PAPER = ROOT / "workloads" / "fastcar_vilau7b_u280.yaml"
OUT = ROOT / "docs" / "img"
#: run directory name -> overrides of the paper workload
RUNS = {
    "paper": [],
    "paper-no-drs": ["scheduler.drs=false"],
    "paper-replay80": ["policy.target_replay_ratio=0.8"],
}
WIDTH = 1280


def cosim(*args: str, cwd: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "cosim", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"python -m cosim {' '.join(args)} failed:\n{r.stderr}")
    print(r.stdout.strip())


def photograph(page: Path, png: Path, height: int) -> Path:
    """A screenshot of ``page`` cut 24 px below its last non-white row, stored with a 256-colour palette."""
    shot = screenshot(page, png, width=WIDTH, height=height)
    img = Image.open(shot).convert("RGB")
    rows = np.flatnonzero((np.asarray(img.convert("L")) < 250).any(axis=1))
    img = img.crop((0, 0, WIDTH, min(img.height, int(rows[-1]) + 24)))
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(png, optimize=True)
    print(f"{png.relative_to(ROOT)}: {img.width} x {img.height}, {png.stat().st_size / 1024:.0f} KB")
    return png


def main() -> None:
    if chromium() is None:
        sys.exit("chromium is not installed (apt-get install -y chromium)")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, overrides in RUNS.items():
            sets = [a for o in overrides for a in ("--set", o)]
            cosim("run", str(PAPER), "--out", name, *sets, cwd=tmp)
        cosim("compare", *RUNS, "--out", "compare", cwd=tmp)
        photograph(tmp / "compare" / "report.html", OUT / "compare_report.png", height=3000)
        photograph(tmp / "paper" / "report.html", OUT / "run_report.png", height=3400)


if __name__ == "__main__":
    main()
