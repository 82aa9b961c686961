import subprocess
import sys

import yaml
from tiny_workload import TINY


def run(tmp_path, name, *extra):
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(TINY))
    out = tmp_path / name
    r = subprocess.run(
        [sys.executable, "-m", "cosim", "run", str(path), "--out", str(out), *extra],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return (out / "summary.json").read_bytes(), (out / "layers.csv").read_bytes()


def test_same_seed_identical_bytes_other_seed_differs(tmp_path):
    a = run(tmp_path, "a", "--seed", "3")
    b = run(tmp_path, "b", "--seed", "3")
    c = run(tmp_path, "c", "--seed", "4")
    assert a == b
    assert a[0] != c[0]
