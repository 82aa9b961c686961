"""Resource table of the RTL twins and the accelerator-level estimate a sweep uses to reject configurations.

The table (``resources.json`` beside this file) holds Yosys ``synth_xilinx -family xcup`` results per
module and parameter set; regenerate it with ``python -m accelerator.rtl.resources`` (about a minute per
module sweep; results are cached). All numbers are **pre-place-and-route estimates**: generic synthesis,
no timing closure, no vendor optimisation, no interconnect, memory controllers or shell.

:func:`estimate` adds up one GEMV tile and one output writer per core, the TAS unit, the DRS scheduler,
the replay-cache controller, the top level's sequencer, one softmax unit per core and the cores' operand
buffers (URAM, then BRAM) for a
:class:`~accelerator.spec.HardwareSpec`. Each module's resources are a function of
its scaling parameter (lanes, TAS lanes, cores, port bits): exact at the synthesized parameter sets,
piecewise linear between them and linear beyond them; the result says which (``basis``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

import numpy as np

from accelerator.spec import HardwareSpec

TABLE = Path(__file__).with_name("resources.json")
LABEL = (
    "pre-place-and-route estimate (Yosys synth_xilinx -family xcup, no I/O, no shell or memory controllers)"
)
KEYS = ("luts", "ffs", "dsps", "brams")

#: The parameter sets synthesized for the table: module -> (scaling parameter, values, fixed parameters).
SWEEPS: dict[str, tuple[str, list[int], dict]] = {
    "gemv_tile": ("lanes", [4, 8, 16, 32, 64, 128], {"w_bits": 8, "x_bits": 16, "max_cols": 16384}),
    "tas_unit": ("lanes", [4, 8, 16, 32], {"heads": 32, "head_dim": 128, "width": 16}),
    "drs_scheduler": ("cores", [2, 4, 8, 16, 32], {}),
    "replay_cache_ctrl": (
        "port_bits",
        [128, 256, 512, 1024],
        {"layers": 32, "tokens_per_frame": 256, "words": 4096, "word_bits": 16},
    ),
    "sequencer": ("cores", [2, 4, 8], {"queue_depth": 16, "idepth": 64}),
    "output_writer": ("lanes", [64, 128, 256, 512], {"port": 1}),
    "softmax_unit": ("lanes", [64, 128, 256, 512], {"max_keys": 2064}),
}
#: Bits of one UltraRAM (URAM288: 4K x 72) and of one block RAM (RAMB36: 36 Kb).
URAM_BITS, BRAM_BITS = 288 * 1024, 36 * 1024
#: What the estimate does not contain: stated with every fit verdict.
NOT_INCLUDED = (
    "memory controllers, PCIe/shell, the AXI interconnect, the engines' control, the activation memory "
    "(its size depends on the model and batch), the TAS unit's key buffer and readers and the replay-cache "
    "data path are not included"
)


def bench_for(module: str, params: dict):
    """An (empty-stimulus) bench of ``module`` with ``params``, for conversion and synthesis."""
    from accelerator.rtl.drs import DrsBench, DrsParams
    from accelerator.rtl.pe_lane import GemvBench, GemvParams
    from accelerator.rtl.replay_cache import ReplayBench, ReplayParams
    from accelerator.rtl.tas_unit import TasBench, TasParams

    if module == "gemv_tile":
        return GemvBench(GemvParams(**params), [])
    if module == "tas_unit":
        return TasBench(TasParams(**params), [])
    if module == "drs_scheduler":
        return DrsBench(DrsParams(**params), [], 1)
    if module == "replay_cache_ctrl":
        return ReplayBench(ReplayParams(**params), [])
    if module == "sequencer":
        from accelerator.rtl.sequencer import SequencerBench, SequencerParams

        return SequencerBench(SequencerParams(**params), [])
    if module == "output_writer":
        from accelerator.rtl.datapath import WriterBench, WriterParams

        return WriterBench(WriterParams(**params), [])
    if module == "softmax_unit":
        from accelerator.rtl.softmax import SoftmaxBench, SoftmaxParams

        return SoftmaxBench(SoftmaxParams(**params), [])
    raise KeyError(module)


def build_table(modules: list[str] | None = None, path: Path = TABLE, verbose: bool = True) -> list[dict]:
    """Synthesize every parameter set of :data:`SWEEPS` and write the table."""
    from accelerator.rtl.yosys import synthesize, yosys_version

    rows = []
    for module, (param, values, fixed) in SWEEPS.items():
        if modules and module not in modules:
            continue
        for v in values:
            bench = bench_for(module, {**fixed, param: v})
            res = synthesize(bench)
            row = {
                "module": module,
                "param": param,
                "value": v,
                "params": asdict(bench.params),
                **{k: res[k] for k in (*KEYS, "lutram", "urams", "carry", "synth_s")},
            }
            rows.append(row)
            if verbose:
                print(f"{module:18s} {param}={v:<5d} " + " ".join(f"{k}={row[k]}" for k in KEYS), flush=True)
    if modules and path.exists():  # keep the other modules' rows
        rows = [r for r in load_table(path)["rows"] if r["module"] not in modules] + rows
        order = list(SWEEPS)
        rows.sort(
            key=lambda r: (order.index(r["module"]) if r["module"] in order else len(order), r["value"])
        )
    doc = {
        "label": LABEL,
        "tool": yosys_version(),
        "command": "python -m accelerator.rtl.resources",
        "rows": rows,
    }
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return rows


def load_table(path: Path = TABLE) -> dict:
    return json.loads(path.read_text())


def write_csv(rows: list[dict], path: Path) -> None:
    fields = ["module", "param", "value", *KEYS, "lutram", "urams", "carry", "synth_s", "params"]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({**{k: r.get(k) for k in fields}, "params": json.dumps(r["params"], sort_keys=True)})


def _fit(rows: list[dict], x: float) -> tuple[dict[str, float], str]:
    """Each resource at ``x``: exact at synthesized points, piecewise linear between them, and linear
    beyond them along the outermost segment."""
    rows = sorted(rows, key=lambda r: r["value"])
    xs = np.array([r["value"] for r in rows], dtype=float)
    out = {}
    for k in KEYS:
        ys = np.array([r[k] for r in rows], dtype=float)
        if len(xs) == 1:
            out[k] = float(ys[0])
        elif x < xs[0]:
            out[k] = float(ys[0] + (x - xs[0]) * (ys[1] - ys[0]) / (xs[1] - xs[0]))
        elif x > xs[-1]:
            out[k] = float(ys[-1] + (x - xs[-1]) * (ys[-1] - ys[-2]) / (xs[-1] - xs[-2]))
        else:
            out[k] = float(np.interp(x, xs, ys))
        out[k] = max(0.0, out[k])
    exact = bool(np.any(xs == x))
    where = "synthesized" if exact else ("interpolated" if xs[0] <= x <= xs[-1] else "extrapolated")
    return out, where


def operand_buffers(hw: HardwareSpec) -> dict:
    """The cores' operand buffers (``weight_buffers`` x ``weight_buffer_KiB`` each) in on-chip RAM:
    UltraRAM first, as far as the board has it, the rest in block RAM (whole 72-bit-wide URAMs and
    36 Kb BRAMs, so a buffer is rounded up to whole memories)."""
    bits = hw.weight_buffer_KiB * 1024 * 8
    per_buffer_urams = math.ceil(bits / URAM_BITS)
    buffers = hw.cores * hw.weight_buffers
    in_uram = min(buffers, hw.resources.urams // per_buffer_urams) if per_buffer_urams else 0
    return {
        "instances": buffers,
        "KiB": hw.weight_buffer_KiB,
        "urams": in_uram * per_buffer_urams,
        "brams": (buffers - in_uram) * math.ceil(bits / BRAM_BITS),
        "luts": 0,
        "ffs": 0,
        "dsps": 0,
        "basis": f"{buffers} buffers, {in_uram} in URAM",
    }


#: Estimates against the shipped table, by hardware (its JSON) and table version: a sweep asks for each
#: design's estimate several times, and parsing the table costs as much as the estimate.
_ESTIMATES: OrderedDict[tuple[str, int], dict] = OrderedDict()
ESTIMATES_KEPT = 256


def estimate(hw: HardwareSpec, table: dict | None = None) -> dict:
    """Total LUT/FF/DSP/BRAM/URAM of the accelerator described by ``hw`` (pre-place-and-route estimate).

    One GEMV tile of ``hw.lanes_per_core`` lanes per core, one TAS unit of ``hw.tas_lanes`` lanes, one DRS
    scheduler for ``hw.cores`` cores, one replay-cache controller with a ``hw.replay_port_bits`` port, the
    sequencer of the top level for ``hw.cores`` cores, one output writer and one softmax unit (score memory
    for the paper model's 2,064 keys) per core, and the cores' operand buffers (:func:`operand_buffers`).
    """
    if table:
        return _estimate(hw, table)
    key = (hw.model_dump_json(), TABLE.stat().st_mtime_ns)
    if key in _ESTIMATES:
        _ESTIMATES.move_to_end(key)
    else:
        _ESTIMATES[key] = _estimate(hw, load_table())
        if len(_ESTIMATES) > ESTIMATES_KEPT:
            _ESTIMATES.popitem(last=False)
    est = _ESTIMATES[key]
    return {**est, "per_module": {m: dict(part) for m, part in est["per_module"].items()}}  # callers' own


def _estimate(hw: HardwareSpec, table: dict) -> dict:
    rows = table["rows"]
    parts = {
        "gemv_tile": (hw.lanes_per_core, hw.cores),
        "tas_unit": (hw.tas_lanes, 1),
        "drs_scheduler": (hw.cores, 1),
        "replay_cache_ctrl": (hw.replay_port_bits, 1),
        "sequencer": (hw.cores, 1),
        "output_writer": (hw.lanes_per_core, hw.cores),
        "softmax_unit": (hw.lanes_per_core, hw.cores),
    }
    per_module = {}
    totals = dict.fromkeys((*KEYS, "urams"), 0.0)
    for module, (x, count) in parts.items():
        mrows = [r for r in rows if r["module"] == module]
        if not mrows:
            raise KeyError(
                f"resource table has no rows for {module}; run python -m accelerator.rtl.resources"
            )
        one, where = _fit(mrows, x)
        fixed = mrows[0]["params"]
        if module == "gemv_tile" and fixed.get("w_bits") != hw.precision.weights_bits:
            where += f" (table has {fixed.get('w_bits')}-bit weights, spec {hw.precision.weights_bits}-bit)"
        per_module[module] = {
            "instances": count,
            "param": mrows[0]["param"],
            "value": x,
            "basis": where,
            **one,
        }
        for k in KEYS:
            totals[k] += count * one[k]
    buffers = per_module["operand_buffers"] = operand_buffers(hw)
    for k in ("brams", "urams"):
        totals[k] += buffers[k]
    result = {k: (math.ceil(v) if k != "brams" else math.ceil(2 * v) / 2) for k, v in totals.items()}
    return {
        **result,
        "per_module": per_module,
        "label": table.get("label", LABEL),
        "not_included": NOT_INCLUDED,
        "tool": table.get("tool", ""),
    }


def fits(hw: HardwareSpec, table: dict | None = None) -> tuple[bool, str]:
    """Whether the estimate fits ``hw.resources`` (the capacities the board states, i.e. non-zero; URAM
    is checked wherever BRAM is, as the buffers spill from one into the other)."""
    est = estimate(hw, table)
    cap = {
        "luts": hw.resources.luts,
        "ffs": hw.resources.ffs,
        "dsps": hw.resources.dsps,
        "brams": hw.resources.brams,
    }
    known = {k: v for k, v in cap.items() if v > 0}
    if not known:
        return True, "board resources unknown (hardware.resources not set); not checked"
    if "brams" in known and hw.resources.urams:
        known["urams"] = hw.resources.urams
    over = [f"{k} {est[k]} > {v}" for k, v in known.items() if est[k] > v]
    usage = ", ".join(f"{k} {est[k]}/{v} ({100 * est[k] / v:.0f}%)" for k, v in known.items())
    if over:
        return False, f"does not fit: {'; '.join(over)} ({LABEL}; {NOT_INCLUDED})"
    return True, f"fits: {usage} ({LABEL}; {NOT_INCLUDED})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Regenerate the RTL resource table with Yosys.")
    ap.add_argument("--module", action="append", help="only these modules (default all)")
    ap.add_argument("--out", type=Path, default=TABLE)
    ap.add_argument("--csv", type=Path, help="also write the table as CSV")
    args = ap.parse_args(argv)
    rows = build_table(args.module, args.out)
    if args.csv:
        write_csv(rows, args.csv)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
