"""The workload: a versioned YAML schema, preset expansion and ``--set`` overrides.

Loading goes: YAML text (safe loader) -> ``--set`` overrides applied to the raw mapping -> presets
expanded (the user's keys win over the preset's) -> pydantic validation with unknown keys rejected.
Every failure is a :class:`WorkloadError` whose message names the key path and the reason.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from accelerator.spec import HardwareSpec
from cosim.errors import InputError
from models.dims import ModelDims

WORKLOAD_VERSION = 1
ROOT = Path(__file__).resolve().parent.parent
WORKLOADS_DIR = ROOT / "workloads"
MODEL_PRESETS_DIR = WORKLOADS_DIR / "models"
BOARD_PRESETS_DIR = WORKLOADS_DIR / "boards"


class WorkloadError(InputError):
    """Bad input: the message is shown to the user as is."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(ModelDims):
    preset: str | None = Field(None, description="model preset (workloads/models/<preset>.yaml)")


class VideoSection(_Section):
    frames: int = Field(8, gt=1, description="frames T per video")
    tokens_per_frame: int = Field(256, gt=0, description="spatial tokens N per frame")
    prompts: int = Field(1, gt=0, description="videos decoded together (distinct prompts or copies)")
    cfg: bool = Field(
        True, description="classifier-free guidance: a conditional and an unconditional row per prompt"
    )
    cfg_scale: float = Field(3.0, ge=0, description="guidance scale (capture only)")
    prompt_tokens: int = Field(16, ge=0, description="context tokens before the first video token")

    @property
    def batch(self) -> int:
        return self.prompts * (2 if self.cfg else 1)

    @property
    def steps(self) -> int:
        return self.frames * self.tokens_per_frame


class SyntheticSection(_Section):
    """Knobs of the synthetic trace generator (see docs/traces.md)."""

    moving_fraction: float = Field(0.15, ge=0, le=1, description="share of tokens covered by moving objects")
    depth_profile: float = Field(
        1.5, ge=0, description="how much lower middle layers score than shallow/deep ones (logit units)"
    )
    motion_drop: float = Field(3.0, ge=0, description="TAS drop where an object moves (logit units)")
    noise: float = Field(0.6, ge=0, description="per-decision noise (logit units)")
    cfg_noise: float = Field(0.3, ge=0, description="extra noise that separates the CFG copies (logit units)")


class TraceSection(_Section):
    source: Literal["synthetic", "capture", "file", "transfer"] = Field(
        "synthetic", description="where replay decisions come from"
    )
    path: str | None = Field(None, description="trace.parquet to load (source file or transfer)")
    checkpoint: str | None = Field(
        None, description="model checkpoint for capture; default: the shipped tiny model"
    )
    classes: list[int] | None = Field(
        None, description="capture: class ids of the prompts (default 0..prompts-1)"
    )
    seed: int | None = Field(None, description="trace seed; default: simulation.seed")
    synthetic: SyntheticSection = Field(default_factory=SyntheticSection)


POLICIES = ("dense", "tas", "fixed_interval", "random", "input_similarity", "topk", "oracle")
#: Policies that need the model's internals, so only a live capture can run them.
CAPTURE_ONLY_POLICIES = ("input_similarity", "oracle")


class PolicySection(_Section):
    kind: Literal["dense", "tas", "fixed_interval", "random", "input_similarity", "topk", "oracle"] = Field(
        "tas", description="replay policy"
    )
    threshold: float | list[float] | None = Field(
        None, description="tau: replay when TAS >= tau (a raw logit, usually negative); or one tau per layer"
    )
    target_replay_ratio: float | None = Field(
        None, ge=0, lt=1, description="choose tau (or the budget) so that this share of all MLPs replays"
    )
    interval: int = Field(2, ge=2, description="fixed_interval: compute every k-th frame, replay the others")
    strict: bool = Field(False, description="reference-code compare: TAS > tau instead of >=")
    query_pre_rope: bool = Field(False, description="reference-code TAS: query before RoPE (capture only)")
    staleness_cap: int | None = Field(
        None, gt=0, description="at most this many replays in a row per position"
    )
    no_twice_in_row: bool = Field(False, description="never replay two frames in a row (staleness cap 1)")
    cfg_coherent: bool = Field(False, description="the CFG copies of a prompt share one decision")

    @property
    def uses_replay(self) -> bool:
        return self.kind != "dense"


class SparseAttentionSection(_Section):
    sink_tokens: int = Field(4, ge=0, description="StreamingLLM attention sinks (first tokens kept)")
    window: int | None = Field(
        None, gt=0, description="local window; null = full attention (sparse attention off)"
    )


class HardwareSection(HardwareSpec):
    preset: str | None = Field(None, description="board preset (workloads/boards/<preset>.yaml)")


class SchedulerSection(_Section):
    drs: bool = Field(True, description="Dynamic Resource Scheduling; false = static batch-to-core mapping")
    overhead_cycles: int = Field(
        1000, ge=0, description="DRS control overhead per scheduling event beyond the register scan, cycles"
    )


class SimulationSection(_Section):
    mode: Literal["event", "analytic"] = Field("event", description="SimPy event model or closed form")
    seed: int = Field(0, description="seed for every random choice")


class OutputsSection(_Section):
    report: bool = Field(True, description="write report.html")
    timeline_steps: int = Field(
        4, ge=0, description="decode steps recorded in timeline.json (bounds its size)"
    )


class Workload(_Section):
    version: Literal[1] = Field(description="workload schema version")
    name: str = Field("workload", description="run name")
    model: ModelSection
    video: VideoSection = Field(default_factory=VideoSection)
    trace: TraceSection = Field(default_factory=TraceSection)
    policy: PolicySection = Field(default_factory=PolicySection)
    sparse_attention: SparseAttentionSection = Field(default_factory=SparseAttentionSection)
    hardware: HardwareSection = Field(default_factory=HardwareSection)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    simulation: SimulationSection = Field(default_factory=SimulationSection)
    outputs: OutputsSection = Field(default_factory=OutputsSection)

    @model_validator(mode="after")
    def _cross_checks(self) -> Workload:
        v, p, t = self.video, self.policy, self.trace
        max_ratio = (v.frames - 1) / v.frames
        if p.target_replay_ratio is not None and p.target_replay_ratio > max_ratio:
            raise ValueError(
                f"policy.target_replay_ratio: {p.target_replay_ratio} exceeds the maximum (T-1)/T = "
                f"{max_ratio:.4g} for {v.frames} frames (the first frame never replays)"
            )
        if p.kind in CAPTURE_ONLY_POLICIES and t.source != "capture":
            raise ValueError(
                f"policy.kind: {p.kind} needs the model's MLP inputs/outputs, so it needs trace.source: capture"
            )
        if p.kind == "tas" and p.threshold is not None and p.target_replay_ratio is not None:
            raise ValueError(
                "policy: set threshold or target_replay_ratio, not both "
                "(e.g. --set policy.target_replay_ratio=null to use a threshold)"
            )
        if isinstance(p.threshold, list) and len(p.threshold) != self.model.layers:
            raise ValueError(
                f"policy.threshold: {len(p.threshold)} per-layer values for {self.model.layers} layers"
            )
        if t.source in ("file", "transfer") and not t.path:
            raise ValueError(f"trace.path: required when trace.source is {t.source}")
        if self.scheduler.drs and v.batch > 32:
            raise ValueError(f"video: batch {v.batch} exceeds the 32 entries of the DRS index register")
        return self

    @property
    def seed(self) -> int:
        return self.simulation.seed if self.trace.seed is None else self.trace.seed


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"{path}: file not found")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise WorkloadError(f"{path}: malformed YAML{where}: {reason}") from None


def parse_set(items: list[str] | None) -> list[tuple[list[str], Any]]:
    """``KEY=VALUE`` pairs; VALUE is read as YAML (so 8, 0.5, true, null and [1, 2] have their types)."""
    out = []
    for item in items or []:
        if "=" not in item:
            raise WorkloadError(f"--set {item!r}: expected KEY=VALUE, e.g. hardware.cores=8")
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        if not all(parts):
            raise WorkloadError(f"--set {item!r}: malformed key {key!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        out.append((parts, value))
    return out


def apply_overrides(raw: dict, overrides: list[tuple[list[str], Any]]) -> dict:
    raw = copy.deepcopy(raw)
    for parts, value in overrides:
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise WorkloadError(f"--set {'.'.join(parts)}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return raw


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = (
            deep_merge(out[k], v)
            if isinstance(v, dict) and isinstance(out.get(k), dict)
            else copy.deepcopy(v)
        )
    return out


def preset_names(kind: str) -> list[str]:
    folder = MODEL_PRESETS_DIR if kind == "model" else BOARD_PRESETS_DIR
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_preset(kind: str, name: Any) -> dict:
    """A preset file is a partial workload: a model preset sets ``model`` (and ``video`` defaults such as
    tokens per frame), a board preset sets ``hardware``."""
    folder = MODEL_PRESETS_DIR if kind == "model" else BOARD_PRESETS_DIR
    section = "model" if kind == "model" else "hardware"
    path = folder / f"{name}.yaml"
    if not isinstance(name, str) or not path.is_file():
        raise WorkloadError(
            f"{section}.preset: unknown preset {name!r}; choose one of {', '.join(preset_names(kind))}"
        )
    data = load_yaml(path)
    allowed = {"model", "video"} if kind == "model" else {"hardware"}
    if not isinstance(data, dict) or not set(data) <= allowed or section not in data:
        raise WorkloadError(f"{path}: a {kind} preset holds only the sections {', '.join(sorted(allowed))}")
    return data


def expand_presets(raw: dict) -> dict:
    """Preset values first, then the user's keys over them."""
    for section, kind in (("model", "model"), ("hardware", "board")):
        node = raw.get(section)
        if isinstance(node, dict) and node.get("preset") is not None:
            raw = deep_merge(load_preset(kind, node["preset"]), raw)
    return raw


def _format_error(exc: ValidationError, origin: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif "input" in err and not isinstance(err["input"], dict | list):
        msg = f"{msg} (got {err['input']!r})"
    prefix = f"{origin}: " if origin else ""
    return f"{prefix}{loc}: {msg}" if loc else f"{prefix}{msg}"  # cross-section checks name their keys


def resolve(raw: Any, overrides: list[str] | None = None, origin: str = "") -> Workload:
    """Turn a raw mapping (from YAML) plus ``--set`` items into a validated, preset-expanded Workload."""
    if not isinstance(raw, dict):
        raise WorkloadError(f"{origin or 'workload'}: the workload must be a YAML mapping of sections")
    raw = apply_overrides(raw, parse_set(overrides))
    raw = expand_presets(raw)
    try:
        return Workload.model_validate(raw)
    except ValidationError as exc:
        raise WorkloadError(_format_error(exc, origin)) from None


def load_workload(path: str | Path, overrides: list[str] | None = None) -> Workload:
    """Relative ``trace.path`` and ``trace.checkpoint`` are taken relative to the workload file."""
    w = resolve(load_yaml(path), overrides, origin=str(path))
    base = Path(path).resolve().parent
    for key in ("path", "checkpoint"):
        value = getattr(w.trace, key)
        if value and not Path(value).is_absolute():
            setattr(w.trace, key, str(base / value))
    return w


def dump_resolved(w: Workload) -> str:
    return yaml.safe_dump(w.model_dump(mode="json"), sort_keys=False)
