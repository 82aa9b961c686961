import subprocess
import sys

import pytest
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


@pytest.mark.parametrize("granularity", ["phase", "instruction"])
def test_same_seed_identical_bytes_other_seed_differs(tmp_path, granularity):
    g = f"simulation.granularity={granularity}"
    a = run(tmp_path, "a", "--seed", "3", "--set", g)
    b = run(tmp_path, "b", "--seed", "3", "--set", g)
    c = run(tmp_path, "c", "--seed", "4", "--set", g)
    assert a == b
    assert a[0] != c[0]
    assert f'"granularity": "{granularity}"'.encode() in a[0]
