"""Reading a run directory for its report: every file checked before anything is drawn.

A report is rebuilt from files alone, possibly years later, from a directory that may be incomplete
(a file deleted, a copy cut short) or edited by hand. Every such problem is a :class:`ReportError`, one
line naming the file and the reason (exit code 2 from the CLI), never a traceback.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from accelerator.cost import PHASES
from cosim.errors import InputError, is_int, is_number, reason, shown
from cosim.traces import Trace, read_trace


class ReportError(InputError):
    """A run directory the report cannot be built from: one line naming the file and the reason."""


@dataclass
class RunFiles:
    """The checked contents of a run directory."""

    summary: dict[str, Any]
    layers: pd.DataFrame
    config: dict[str, Any]
    trace: Trace
    timeline_events: int
    provenance: dict[str, Any] | None = None  # provenance.json; runs written before it existed have none
    timeline: dict[str, Any] | None = None  # timeline.json as an object with its traceEvents list
    cores: pd.DataFrame | None = None  # cores.csv; runs written before it existed have none
    config_text: str = ""  # config.resolved.yaml as written
    frames_png: bytes | None = None  # frames.png: a capture's decoded frames, dense above replayed


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_dict(v: Any) -> bool:
    return isinstance(v, dict)


def _is_number_map(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(k, str) and is_number(x) for k, x in v.items())


def _is_number_list(v: Any) -> bool:
    return isinstance(v, list) and all(is_number(x) for x in v)


def _is_tau(v: Any) -> bool:
    return v is None or is_number(v) or (isinstance(v, list) and all(is_number(x) for x in v))


#: summary.json keys the report needs, and what each must be.
SUMMARY_REQUIRED: dict[str, tuple[Any, str]] = {
    "workload": (_is_str, "a string"),
    "model": (_is_str, "a string"),
    "hardware": (_is_str, "a string"),
    "policy": (_is_str, "a string"),
    "mode": (_is_str, "a string"),
    "trace_label": (_is_str, "a string"),
    "drs": (_is_bool, "true or false"),
    "batch": (is_int, "an integer"),
    "frames": (is_int, "an integer"),
    "tokens_per_frame": (is_int, "an integer"),
    "seed": (is_int, "an integer"),
    "energy_j": (is_number, "a number"),
    "breakdown_s": (_is_number_map, "an object of numbers"),
    "dense_breakdown_s": (_is_number_map, "an object of numbers"),
}
#: Keys the report uses when they are there (the metric rows take any value and show it as text).
SUMMARY_OPTIONAL: dict[str, tuple[Any, str]] = {
    "trace_is_real": (_is_bool, "true or false"),
    "energy_breakdown_j": (_is_number_map, "an object of numbers"),
    "quality": (_is_dict, "an object"),
    "resources_estimate": (_is_dict, "an object"),
    "fits_board": (_is_bool, "true or false"),
    "tau": (_is_tau, "a number or a list of numbers"),
    "dense_energy_breakdown_j": (_is_number_map, "an object of numbers"),
    "core_busy_s": (_is_number_list, "a list of numbers"),
    "drs_off_core_busy_s": (_is_number_list, "a list of numbers"),
}
RESOURCES: dict[str, tuple[Any, str]] = {
    "luts": (is_number, "a number"),
    "ffs": (is_number, "a number"),
    "dsps": (is_number, "a number"),
    "brams": (is_number, "a number"),
    "label": (_is_str, "a string"),
}
HARDWARE: dict[str, tuple[Any, str]] = {
    "cores": (is_int, "an integer"),
    "lanes_per_core": (is_int, "an integer"),
    "clock_MHz": (is_number, "a number"),
}


def _check(data: dict, schema: dict, where: str, required: bool) -> None:
    for key, (ok, what) in schema.items():
        if key not in data:
            if required:
                raise ReportError(f"{where}: missing key {key!r}")
            continue
        if not ok(data[key]):
            raise ReportError(f"{where}: {key} is {shown(data[key], 40)}, it must be {what}")


def _read_bytes(path: Path) -> bytes:
    """A file's bytes; a missing, unreadable or empty file is a ReportError."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ReportError(f"{path}: missing (incomplete run directory)") from None
    except IsADirectoryError:
        raise ReportError(f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise ReportError(f"{path}: cannot read ({exc.strerror or reason(exc)})") from None
    if not data.strip():
        raise ReportError(f"{path}: empty file (incomplete run directory)")
    return data


def _read_text(path: Path) -> str:
    data = _read_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReportError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{path}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
        ) from None


def read_summary(path: Path) -> dict[str, Any]:
    summary = _read_json(path)
    if not isinstance(summary, dict):
        raise ReportError(f"{path}: a JSON {type(summary).__name__}, not an object")
    _check(summary, SUMMARY_REQUIRED, str(path), required=True)
    _check(summary, SUMMARY_OPTIONAL, str(path), required=False)
    res = summary.get("resources_estimate")
    if res is not None:
        _check(res, RESOURCES, f"{path}: resources_estimate", required=True)
        if "fits_board" not in summary:
            raise ReportError(f"{path}: missing key 'fits_board' (resources_estimate is there)")
    on, off = summary.get("core_busy_s"), summary.get("drs_off_core_busy_s")
    if on is not None and off is not None and len(on) != len(off):
        raise ReportError(
            f"{path}: core_busy_s has {len(on)} cores and drs_off_core_busy_s {len(off)}; they must match"
        )
    for key in ("breakdown_s", "dense_breakdown_s", "energy_breakdown_j", "dense_energy_breakdown_j"):
        if key in summary and any(not math.isfinite(v) for v in summary[key].values()):
            raise ReportError(f"{path}: {key} holds a value that is not a finite number")
    return summary


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ReportError(
            f"{path}: not valid YAML{where} ({getattr(exc, 'problem', None) or 'parse error'})"
        ) from None
    if not isinstance(config, dict):
        raise ReportError(f"{path}: a YAML {type(config).__name__}, not a mapping")
    hw = config.get("hardware")
    if not isinstance(hw, dict):
        raise ReportError(
            f"{path}: hardware is {'missing' if hw is None else shown(hw, 40)}, it must be a mapping"
        )
    _check(hw, HARDWARE, f"{path}: hardware", required=True)
    return config


def read_layers(path: Path) -> pd.DataFrame:
    _read_bytes(path)
    try:
        layers = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ReportError(f"{path}: empty file (incomplete run directory)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise ReportError(f"{path}: not a valid CSV table ({reason(exc)})") from None
    if layers.empty:
        raise ReportError(f"{path}: no rows (one per layer expected)")
    numeric = ["layer", "replay_ratio"] + [f"{p}_s" for p in PHASES if f"{p}_s" in layers]
    for col in numeric:
        if col not in layers:
            raise ReportError(f"{path}: missing column {col!r}")
        if not pd.api.types.is_numeric_dtype(layers[col]) or pd.api.types.is_bool_dtype(layers[col]):
            raise ReportError(f"{path}: column {col!r} holds values that are not numbers")
    return layers


def read_trace_file(path: Path) -> Trace:
    _read_bytes(path)
    try:
        trace = read_trace(path)
    except InputError as exc:  # the trace reader's own checks: name the file once, keep the reason
        msg = str(exc)
        raise ReportError(msg if str(path) in msg else f"{path}: {msg}") from None
    return trace  # read_trace checked the grid, the rows and the metadata


def read_timeline(path: Path) -> dict[str, Any]:
    """timeline.json is Chrome/Perfetto trace-event JSON: an object with ``traceEvents``, or a list (given
    back as an object with that list)."""
    data = _read_json(path)
    events = data.get("traceEvents") if isinstance(data, dict) else data
    if not isinstance(events, list):
        raise ReportError(f"{path}: not Chrome trace-event JSON (no traceEvents list)")
    return data if isinstance(data, dict) else {"traceEvents": events}


def read_cores(path: Path, cores: int) -> pd.DataFrame | None:
    """cores.csv (one row per decode step, ``core<i>_busy_s`` per core), or None where a run predates it."""
    if not path.exists():
        return None
    _read_bytes(path)
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise ReportError(f"{path}: not a valid CSV table ({reason(exc)})") from None
    if table.empty:
        raise ReportError(f"{path}: no rows (one per decode step expected)")
    for col in ["step", "frame", "start_s", "end_s"] + [f"core{c}_busy_s" for c in range(cores)]:
        if col not in table:
            raise ReportError(f"{path}: missing column {col!r}")
        if not pd.api.types.is_numeric_dtype(table[col]) or pd.api.types.is_bool_dtype(table[col]):
            raise ReportError(f"{path}: column {col!r} holds values that are not numbers")
    return table


def read_run_dir(run_dir: str | Path) -> RunFiles:
    """Every file the report is built from, checked; the first problem raises :class:`ReportError`."""
    d = Path(run_dir)
    if not d.is_dir():
        raise ReportError(f"{d}: not a directory")
    summary = read_summary(d / "summary.json")
    config = read_config(d / "config.resolved.yaml")
    layers = read_layers(d / "layers.csv")
    trace = read_trace_file(d / "trace.parquet")
    timeline = read_timeline(d / "timeline.json")
    png = d / "frames.png"
    return RunFiles(
        summary,
        layers,
        config,
        trace,
        len(timeline["traceEvents"]),
        read_provenance(d / "provenance.json"),
        timeline,
        read_cores(d / "cores.csv", config["hardware"]["cores"]),
        _read_text(d / "config.resolved.yaml"),
        _read_bytes(png) if png.exists() else None,
    )


def read_provenance(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ReportError(f"{path}: a JSON {type(data).__name__}, not an object")
    return data
