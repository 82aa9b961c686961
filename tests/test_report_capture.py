"""The run report of a live capture: the quality table defines every key the capture writes, and prompt
0's decoded frames are shown, dense above replayed."""

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from tiny_workload import TINY_CAPTURE

from cosim.quality_keys import QUALITY_KEYS, quality_definition
from cosim.traces.capture import FRAME_GAP, FRAME_SCALE
from models.checkpoint import DEFAULT_CHECKPOINT
from reports.run_report import write_run_report

pytestmark = pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="shipped checkpoint missing")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("capture_report")
    raw = dict(TINY_CAPTURE, outputs={"report": True, "timeline_steps": 1})
    raw["trace"] = {"source": "capture", "quality_seeds": 2}  # the mean and std keys too
    (tmp / "w.yaml").write_text(yaml.safe_dump(raw))
    r = subprocess.run(
        [sys.executable, "-m", "cosim", "run", str(tmp / "w.yaml"), "--out", str(tmp / "run")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return tmp / "run"


def test_every_quality_key_the_capture_writes_is_defined(run_dir):
    quality = json.loads((run_dir / "summary.json").read_text())["quality"]
    assert {"psnr_db_mean", "psnr_db_std", "forced_ssim", "baseline_copy_previous_psnr_db"} <= set(quality)
    undefined = [k for k in quality if quality_definition(k) is None]
    assert not undefined, undefined
    assert quality_definition("no_such_key") is None and quality_definition("ssim_std")[0] == "1"
    page = (run_dir / "report.html").read_text()
    table = page.split("<table id=quality>", 1)[1].split("</table>", 1)[0]
    spread = [k for k in quality if k.endswith(("_mean", "_std"))]
    assert table.count("<tr><td>") == len(quality) - len(spread)  # mean and std beside their metric
    assert "<tr><td>psnr_db</td>" in table and "<td>dB</td>" in table and "not defined" not in table
    mean, std = quality["psnr_db_mean"], quality["psnr_db_std"]
    assert f"{mean:.4g} &plusmn; {std:.2g}" in table and "mean &plusmn; std over 2 seeds" in table


def test_quality_definitions_are_in_the_docs():
    docs = (ROOT / "docs" / "metrics.md").read_text().split("### `quality`", 1)[1].split("### `machine`")[0]
    named = set(re.findall(r"`([a-z_]+)`", docs))
    # forced_*_all_frames is spelled with a star in the docs
    missing = [k for k in QUALITY_KEYS if k not in named and not re.fullmatch(r"forced_\w+_all_frames", k)]
    assert not missing, missing


def test_decoded_frames_dense_above_replayed(run_dir):
    from PIL import Image

    png = (run_dir / "frames.png").read_bytes()
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    frames, side = TINY_CAPTURE["video"]["frames"], 32 * FRAME_SCALE
    assert img.shape == (2 * side + FRAME_GAP, frames * side + (frames - 1) * FRAME_GAP, 3)
    top, bottom = img[:side], img[side + FRAME_GAP :]
    assert np.array_equal(top[:, :side], bottom[:, :side])  # frame 0 never replays: identical
    assert img.std() > 10  # not a blank strip
    page = (run_dir / "report.html").read_text()
    assert page.count("<img id=frames") == 1 and "data:image/png;base64," in page


def test_rebuilt_capture_report_is_the_same(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "report.html").unlink()
    write_run_report(copy)
    assert (copy / "report.html").read_bytes() == (run_dir / "report.html").read_bytes()


def test_quality_table_prints_counts_as_counts_with_units():
    from reports.run_report import quality_table

    table = quality_table({"mlp_rows": 12290, "psnr_db": 19.391234, "policy": "tas"})
    rows = {r.split("</td>", 1)[0]: r for r in table.split("<tr><td>")[1:]}
    assert "<td class=v>12,290</td>" in rows["mlp_rows"]  # not 1.229e+04
    assert "<td class=v>19.39</td><td>dB</td>" in rows["psnr_db"]
    assert "<td class=v>tas</td>" in rows["policy"]
