"""The workload: a versioned YAML schema, preset expansion and ``--set`` overrides.

Loading goes: YAML text (safe loader) -> ``--set`` overrides applied to the raw mapping -> presets
expanded (the user's keys win over the preset's) -> pydantic validation with unknown keys rejected.
Every failure is a :class:`WorkloadError` whose message names the key path and the reason.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from accelerator.spec import HardwareSpec
from cosim.errors import InputError, shown
from models.dims import SAFE_NAME, SAFE_NAME_RULE, InputModel, ModelDims

WORKLOAD_VERSION = 1
ROOT = Path(__file__).resolve().parent.parent
WORKLOADS_DIR = ROOT / "workloads"
MODEL_PRESETS_DIR = WORKLOADS_DIR / "models"
BOARD_PRESETS_DIR = WORKLOADS_DIR / "boards"

#: A workload name becomes a directory under runs/, a preset name a file under workloads/: both are
#: plain file names (models.dims.SAFE_NAME).
#: Seeds feed numpy (any non-negative int) and torch; the common range is an unsigned 32-bit word.
MAX_SEED = 2**32 - 1
#: Far above any video a model decodes; also what trace files of the first format (int16 frame ids) hold.
MAX_FRAMES = 2**15 - 1
MAX_INT32 = 2**31 - 1
#: Deepest YAML nesting accepted (a workload needs 4 levels: hardware.memory.<group>.<key>).
MAX_YAML_DEPTH = 32
#: Bound of the synthetic generator's knobs (logit units; TAS values are a few units): keeps every TAS
#: finite in the float32 trace column.
MAX_LOGIT = 1000.0


class WorkloadError(InputError):
    """Bad input: the message is shown to the user as is."""


class CapacityError(WorkloadError):
    """A well-formed design whose data do not fit its memory groups (see :mod:`accelerator.capacity`).

    Its own class so that a design-space sweep can record such a point as infeasible and go on."""


def check_safe_name(value: str) -> str:
    if not SAFE_NAME.fullmatch(value):
        raise ValueError(f"not a plain file name: use {SAFE_NAME_RULE}")
    return value


class _Section(InputModel):
    """A workload section (unknown keys and non-finite numbers refused, as :class:`InputModel` does)."""


class ModelSection(ModelDims):
    preset: str | None = Field(None, description="model preset (workloads/models/<preset>.yaml)")


class VideoSection(_Section):
    frames: int = Field(8, gt=1, le=MAX_FRAMES, description="frames T per video")
    tokens_per_frame: int = Field(256, gt=0, le=MAX_INT32, description="spatial tokens N per frame")
    prompts: int = Field(
        1, gt=0, le=MAX_INT32 // 2, description="videos decoded together (distinct prompts or copies)"
    )
    cfg: bool = Field(
        True, description="classifier-free guidance: a conditional and an unconditional row per prompt"
    )
    cfg_scale: float = Field(3.0, ge=0, description="guidance scale (capture only)")
    prompt_tokens: int = Field(
        16, ge=0, le=MAX_INT32, description="context tokens before the first video token"
    )

    @model_validator(mode="after")
    def _check(self) -> VideoSection:
        if self.steps > MAX_INT32:
            raise ValueError(
                f"frames x tokens_per_frame = {self.steps} decode steps exceeds {MAX_INT32} "
                "(the trace stores the step as int32)"
            )
        if self.prompt_tokens + self.steps > MAX_INT32:
            raise ValueError(
                f"prompt_tokens + decode steps = {self.prompt_tokens + self.steps} exceeds {MAX_INT32}"
            )
        return self

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
        1.5,
        ge=0,
        le=MAX_LOGIT,
        description="how much lower middle layers score than shallow/deep ones (logit units)",
    )
    motion_drop: float = Field(
        3.0, ge=0, le=MAX_LOGIT, description="TAS drop where an object moves (logit units)"
    )
    noise: float = Field(0.6, ge=0, le=MAX_LOGIT, description="per-decision noise (logit units)")
    cfg_noise: float = Field(
        0.3, ge=0, le=MAX_LOGIT, description="extra noise that separates the CFG copies (logit units)"
    )


class TraceSection(_Section):
    source: Literal["synthetic", "capture", "file", "transfer"] = Field(
        "synthetic", description="where replay decisions come from"
    )
    path: str | None = Field(None, description="trace.parquet to load (source file or transfer)")
    checkpoint: str | None = Field(
        None,
        description="model checkpoint for capture: this project's .safetensors, or a Hugging Face Llama, "
        "Mistral or Qwen2 checkpoint (a directory with config.json, or a .safetensors file beside it; "
        "docs/capture.md); default: the shipped tiny model",
    )
    classes: list[int] | None = Field(
        None, description="capture: class ids of the prompts (default 0..prompts-1)"
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="trace seed; default: simulation.seed")
    quality_seeds: int = Field(
        3,
        ge=1,
        le=64,
        description="capture: sampling seeds (seed, seed+1, ...) the quality is measured over; quality.json "
        "gives their mean and spread, the trace is the first seed's",
    )

    @field_validator("classes")
    @classmethod
    def _check_classes(cls, classes: list[int] | None) -> list[int] | None:
        if classes is not None:
            if not classes:
                raise ValueError("needs at least one class id (or null for the default)")
            bad = [c for c in classes if c < 0]
            if bad:
                raise ValueError(f"class ids are >= 0, got {bad[0]}")
        return classes

    synthetic: SyntheticSection = Field(default_factory=SyntheticSection)


POLICIES = ("dense", "tas", "fixed_interval", "random", "input_similarity", "topk", "oracle")
#: Policies that need the model's internals, so only a live capture can run them.
CAPTURE_ONLY_POLICIES = ("input_similarity", "oracle")


class PolicySection(_Section):
    kind: Literal["dense", "tas", "fixed_interval", "random", "input_similarity", "topk", "oracle"] = Field(
        "tas",
        description="replay policy; tas and input_similarity need threshold or target_replay_ratio, "
        "topk, random and oracle need target_replay_ratio (with a synthetic or captured trace)",
    )
    threshold: float | list[float] | None = Field(
        None, description="tau: replay when TAS >= tau (a raw logit, usually negative); or one tau per layer"
    )
    target_replay_ratio: float | None = Field(
        None, ge=0, lt=1, description="choose tau (or the budget) so that this share of all MLPs replays"
    )
    tau_calibration: Literal["dense", "closed_loop"] = Field(
        "dense",
        description="capture, tas with target_replay_ratio: choose tau on the dense run's TAS (the replaying "
        "run lands near the target) or closed_loop: re-choose it on the replaying run's own TAS until that "
        "run replays the target within 0.005 (up to 8 decodes)",
    )
    interval: int = Field(
        2,
        ge=2,
        le=MAX_FRAMES,
        description="fixed_interval: compute every k-th frame, replay the others (with "
        "target_replay_ratio set, a staggered schedule at that budget is used instead)",
    )
    strict: bool = Field(False, description="reference-code compare: TAS > tau instead of >=")
    query_pre_rope: bool = Field(False, description="reference-code TAS: query before RoPE (capture only)")
    staleness_cap: int | None = Field(
        None, gt=0, le=MAX_FRAMES, description="at most this many replays in a row per position"
    )
    no_twice_in_row: bool = Field(False, description="never replay two frames in a row (staleness cap 1)")
    cfg_coherent: bool = Field(False, description="the CFG copies of a prompt share one decision")

    @property
    def uses_replay(self) -> bool:
        return self.kind != "dense"


class SparseAttentionSection(_Section):
    sink_tokens: int = Field(
        4, ge=0, le=MAX_INT32, description="StreamingLLM attention sinks (first tokens kept)"
    )
    window: int | None = Field(
        None, gt=0, le=MAX_INT32, description="local window; null = full attention (sparse attention off)"
    )


class HardwareSection(HardwareSpec):
    preset: str | None = Field(None, description="board preset (workloads/boards/<preset>.yaml)")


class SchedulerSection(_Section):
    drs: bool = Field(True, description="Dynamic Resource Scheduling; false = static batch-to-core mapping")
    overhead_cycles: int = Field(
        0,
        ge=0,
        le=MAX_INT32,
        description="assumed DRS control overhead per scheduling event beyond what the hardware does "
        "(register scan and mapping commit), cycles; 0 = none",
    )
    dispatch: Literal["round_robin", "least_loaded"] = Field(
        "round_robin",
        description="DRS rule for mapping computing entries to cores: round_robin (the paper) or "
        "least_loaded (the core with the least queued work; instruction granularity only)",
    )
    layer_barrier: bool = Field(
        True,
        description="true: a layer starts when the previous one has finished everywhere (the paper's "
        "pre-compiled stream); false: instructions wait only for their own inputs (instruction granularity)",
    )


class SimulationSection(_Section):
    mode: Literal["event", "analytic"] = Field("event", description="SimPy event model or closed form")
    granularity: Literal["phase", "instruction"] = Field(
        "phase",
        description="event model: phase (a task per core per phase, memoized; the fast path) or "
        "instruction (every compiled instruction through queues, stream engines and memory channels)",
    )
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seed for every random choice")


class OutputsSection(_Section):
    report: bool = Field(True, description="write report.html")
    timeline_steps: int = Field(
        4, ge=0, le=MAX_INT32, description="decode steps recorded in timeline.json (bounds its size)"
    )
    timeline_start: int | None = Field(
        None,
        ge=0,
        le=MAX_INT32,
        description="first decode step recorded in timeline.json; default: the first step of frame 1 "
        "(video.tokens_per_frame), where TAS, DRS and replay first run (frame 0 computes everything)",
    )
    drs_comparison: bool | None = Field(
        None,
        description="with DRS on and a replaying policy, simulate the same trace with DRS off too, for "
        "drs_off_latency_s, drs_gain and the report's DRS figure (one more simulation); default: true "
        "for run, false for a sweep's points",
    )


def timeline_window(w: Workload) -> range:
    """Decode steps timeline.json records: ``outputs.timeline_steps`` from ``outputs.timeline_start`` (by
    default the first step of frame 1, or step 0 of a one-frame video), cut at the last step."""
    v, o = w.video, w.outputs
    start = o.timeline_start if o.timeline_start is not None else (v.tokens_per_frame if v.frames > 1 else 0)
    return range(start, min(start + o.timeline_steps, v.steps))


class Workload(_Section):
    version: Literal[1] = Field(description="workload schema version")
    name: str = Field("workload", description=f"run name, the directory under runs/ ({SAFE_NAME_RULE})")
    model: ModelSection
    video: VideoSection = Field(default_factory=VideoSection)
    trace: TraceSection = Field(default_factory=TraceSection)
    policy: PolicySection = Field(default_factory=PolicySection)
    sparse_attention: SparseAttentionSection = Field(default_factory=SparseAttentionSection)
    hardware: HardwareSection = Field(default_factory=HardwareSection)
    scheduler: SchedulerSection = Field(default_factory=SchedulerSection)
    simulation: SimulationSection = Field(default_factory=SimulationSection)
    outputs: OutputsSection = Field(default_factory=OutputsSection)

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        return check_safe_name(name)

    @model_validator(mode="after")
    def _cross_checks(self) -> Workload:
        v, t = self.video, self.trace
        self._check_policy()
        if t.source in ("file", "transfer") and not t.path:
            raise ValueError(f"trace.path: required when trace.source is {t.source}")
        if t.classes is not None and len(t.classes) != v.prompts:
            raise ValueError(
                f"trace.classes: {len(t.classes)} class ids for video.prompts = {v.prompts} prompts"
            )
        if self.scheduler.drs and v.batch > 32:
            raise ValueError(
                f"video: batch {v.batch} exceeds the 32 entries of the DRS index register "
                "(set scheduler.drs: false for the static batch-to-core mapping)"
            )
        start = self.outputs.timeline_start
        if start is not None and start >= v.steps:
            raise ValueError(
                f"outputs.timeline_start: {start} is past the last decode step ({v.steps - 1} = video.frames x "
                "video.tokens_per_frame - 1)"
            )
        self._check_machine()
        return self

    def _check_machine(self) -> None:
        """Options only the instruction-level machine has: say so instead of silently ignoring them."""
        sim, sch = self.simulation, self.scheduler
        instruction = sim.mode == "event" and sim.granularity == "instruction"
        where = f"simulation.mode: {sim.mode}" + (
            f", granularity: {sim.granularity}" if sim.mode == "event" else ""
        )
        if not instruction:
            if sch.dispatch != "round_robin":
                raise ValueError(
                    f"scheduler.dispatch: {sch.dispatch} needs simulation.mode: event and simulation.granularity: "
                    f"instruction ({where} maps the computing entries round robin)"
                )
            if not sch.layer_barrier:
                raise ValueError(
                    "scheduler.layer_barrier: false needs simulation.mode: event and simulation.granularity: "
                    f"instruction ({where} schedules layer by layer)"
                )
        elif self.video.batch > 32:
            raise ValueError(
                f"video: batch {self.video.batch} exceeds the 32-entry mask of an instruction word "
                "(simulation.granularity: phase has no such limit)"
            )

    def _check_policy(self) -> None:
        """Each policy's required settings, so that ``validate`` rejects what ``run`` would.

        A policy decides afresh (synthetic and capture sources always do) from ``threshold`` or
        ``target_replay_ratio``; a file or transferred trace with neither keeps the decisions stored in
        the trace when they were made by the same policy (which only the trace file can tell).
        """
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
        if isinstance(p.threshold, list):
            if p.kind != "tas":
                raise ValueError(f"policy.threshold: one value per layer is for kind tas, not {p.kind}")
            if len(p.threshold) != self.model.layers:
                raise ValueError(
                    f"policy.threshold: {len(p.threshold)} per-layer values for {self.model.layers} layers"
                )
        both = p.threshold is not None and p.target_replay_ratio is not None
        if p.kind in ("tas", "input_similarity") and both:
            raise ValueError(
                "policy: set threshold or target_replay_ratio, not both "
                "(e.g. --set policy.target_replay_ratio=null to use a threshold)"
            )
        decides = t.source in ("synthetic", "capture")
        neither = p.threshold is None and p.target_replay_ratio is None
        if decides and p.kind in ("tas", "input_similarity") and neither:
            raise ValueError(
                f"policy: kind {p.kind} needs threshold or target_replay_ratio "
                f"(trace.source {t.source} decides afresh)"
            )
        if decides and p.kind in ("random", "topk", "oracle") and p.target_replay_ratio is None:
            raise ValueError(f"policy.target_replay_ratio: required by kind {p.kind} (its replay budget)")

    @property
    def seed(self) -> int:
        return self.simulation.seed if self.trace.seed is None else self.trace.seed


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing duplicate keys (YAML says they are an error; PyYAML keeps the last one
    silently) and nesting deeper than :data:`MAX_YAML_DEPTH` (which would exhaust Python's stack)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_YAML_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden on purpose
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable: the base class says so
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {first + 1})", key_node.start_mark
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    reason = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"{where}: {reason}"


def parse_yaml(text: str) -> Any:
    """YAML text to Python data with the workload loader (safe, no duplicate keys, bounded nesting)."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (_Loader is a SafeLoader)


def load_yaml(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise WorkloadError(f"{path}: file not found")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise WorkloadError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, offset {exc.start})"
        ) from None
    try:
        return parse_yaml(text)
    except yaml.YAMLError as exc:
        raise WorkloadError(f"{path}: malformed YAML{_yaml_reason(exc)}") from None
    except RecursionError:
        raise WorkloadError(f"{path}: malformed YAML: nested too deeply") from None


def parse_set(items: list[str] | None) -> list[tuple[list[str], Any]]:
    """``KEY=VALUE`` pairs; VALUE is read as YAML (so 8, 0.5, true, null and [1, 2] have their types);
    a VALUE that is not YAML at all is taken as a string."""
    out = []
    for item in items or []:
        if "=" not in item:
            raise WorkloadError(f"--set {item!r}: expected KEY=VALUE, e.g. hardware.cores=8")
        key, _, raw = item.partition("=")
        parts = key.strip().split(".")
        if not all(parts):
            raise WorkloadError(f"--set {item!r}: malformed key {key!r}")
        try:
            value = parse_yaml(raw) if raw.strip() else ""
        except (yaml.constructor.ConstructorError, yaml.composer.ComposerError) as exc:
            raise WorkloadError(f"--set {key}: malformed YAML value{_yaml_reason(exc)}") from None
        except yaml.YAMLError:
            value = raw
        except RecursionError:
            raise WorkloadError(f"--set {key}: malformed YAML value: nested too deeply") from None
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


@functools.lru_cache(maxsize=64)
def _parsed(path: Path, mtime_ns: int) -> Any:
    """A preset file parsed once per version of it (a sweep resolves thousands of workloads)."""
    return load_yaml(path)


def load_preset(kind: str, name: Any) -> dict:
    """A preset file is a partial workload: a model preset sets ``model`` (and ``video`` defaults such as
    tokens per frame), a board preset sets ``hardware``. Presets are names, never paths."""
    folder = MODEL_PRESETS_DIR if kind == "model" else BOARD_PRESETS_DIR
    section = "model" if kind == "model" else "hardware"
    names = preset_names(kind)
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or name not in names:
        raise WorkloadError(
            f"{section}.preset: unknown preset {name!r}; choose one of {', '.join(names)} "
            "(a preset is a name, not a path)"
        )
    path = folder / f"{name}.yaml"
    data = copy.deepcopy(_parsed(path, path.stat().st_mtime_ns))
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


#: Location parts pydantic adds for the members of a union (``threshold: float | list[float]``).
_UNION_TAG = re.compile(r"int|float|str|bool|\w+\[.*\]")


def _format_error(exc: ValidationError, origin: str) -> str:
    errors = exc.errors()
    # A union reports one error per member; show the member the input was meant for (a list input is
    # meant for the list member, not for the scalar one).
    meant = [
        e
        for e in errors
        if not (e["loc"] and _UNION_TAG.fullmatch(str(e["loc"][-1])) and isinstance(e.get("input"), list))
    ]
    err = (meant or errors)[0]
    loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and _UNION_TAG.fullmatch(p)))
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif "input" in err and not isinstance(err["input"], dict | list):
        msg = f"{msg} (got {shown(err['input'], 80)})"
    prefix = f"{origin}: " if origin else ""
    return f"{prefix}{loc}: {msg}" if loc else f"{prefix}{msg}"  # cross-section checks name their keys


def value_overrides(values: Mapping[str, Any] | None) -> list[tuple[list[str], Any]]:
    """Overrides given as dotted keys to Python values (the API's form of ``--set``)."""
    out = []
    for key, value in (values or {}).items():
        parts = str(key).strip().split(".")
        if not all(parts):
            raise WorkloadError(f"override {key!r}: malformed key (dotted, e.g. hardware.cores)")
        out.append((parts, value))
    return out


def resolve(
    raw: Any, overrides: list[str] | None = None, origin: str = "", values: Mapping[str, Any] | None = None
) -> Workload:
    """Turn a raw mapping (from YAML) plus ``--set`` items (then ``values``: dotted keys to Python
    values) into a validated, preset-expanded Workload."""
    if not isinstance(raw, dict):
        raise WorkloadError(f"{origin or 'workload'}: the workload must be a YAML mapping of sections")
    raw = apply_overrides(raw, parse_set(overrides) + value_overrides(values))
    raw = expand_presets(raw)
    try:
        return Workload.model_validate(raw)
    except ValidationError as exc:
        raise WorkloadError(_format_error(exc, origin)) from None


def load_anchored_yaml(path: str | Path) -> Any:
    """A workload file's mapping with its relative ``trace.path`` and ``trace.checkpoint`` made absolute
    (taken from its folder), so that it can serve as the base of sweeps and calibrations run elsewhere."""
    raw = load_yaml(path)
    trace = raw.get("trace") if isinstance(raw, dict) else None
    if isinstance(trace, dict):
        for key in ("path", "checkpoint"):
            value = trace.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                trace[key] = str(Path(path).resolve().parent / value)
    return raw


def load_workload(
    path: str | Path,
    overrides: list[str] | None = None,
    values: Mapping[str, Any] | None = None,
    check_memory: bool = True,
) -> Workload:
    """Relative ``trace.path`` and ``trace.checkpoint`` are taken relative to the workload file.

    After the schema, the checks that need the whole design: that its data fit the board's memory
    (:class:`CapacityError`, unless ``check_memory`` is false) and that the simulation fits this
    machine's memory."""
    w = resolve(load_yaml(path), overrides, origin=str(path), values=values)
    base = Path(path).resolve().parent
    for key in ("path", "checkpoint"):
        value = getattr(w.trace, key)
        if value and not Path(value).is_absolute():
            setattr(w.trace, key, str(base / value))
    check_host_memory(w, origin=str(path))
    if check_memory:
        check_capacity(w, origin=str(path))
    return w


# ---------------------------------------------------------------------------------------------------
# Checks of the whole design
# ---------------------------------------------------------------------------------------------------


def memory_use(w: Workload) -> dict:
    """What each of the design's memory groups holds at the end of the decode (accelerator.capacity)."""
    from accelerator.capacity import memory_use as use
    from accelerator.cost import CostModel

    v = w.video
    return use(
        CostModel(w.hardware, w.model),
        batch=v.batch,
        context_tokens=v.prompt_tokens + v.steps,
        tokens_per_frame=v.tokens_per_frame,
        replay_cache=w.policy.uses_replay,
    )


#: Host memory per trace row (one sequence x layer x decode step), end to end: trace generation or loading,
#: re-deciding, simulation, Parquet and the report. Measured as peak RSS (``ru_maxrss``) minus the RSS after
#: imports, divided by the rows, on runs of 4.2M and 16.8M rows (tiny model, KV260, batch 32): 234 B/row
#: for a synthetic trace, 280 B/row for a file or transferred trace (report on; Python 3.11, numpy 2,
#: pandas 3). Rounded up.
HOST_BYTES_PER_ROW = 300
#: Simulator arrays per (layer, decode step): a fixed part plus ``hardware.cores`` x a part per core.
#: Measured as the tracemalloc peak of one simulation on 32,768 layer-steps (tiny model): analytic 634,
#: 1,450 and 4,714 B at 2, 8 and 32 cores (several (cores, layers, steps) arrays); event model at phase
#: granularity 1,439 and 2,050 B at 2 and 8 cores (batch 10 and 32: the rows of each distinct layer, the
#: critical-path arrays), at instruction granularity 660 and 1,204 B. Rounded up to cover all of them.
HOST_BYTES_PER_CORE_STEP = {"analytic": 144, "event": 64}
HOST_BYTES_PER_LAYER_STEP_BY_MODE = {"analytic": 512, "event": 1600}
#: ``timeline.json``: spans and counters per recorded layer-step and active core, as dicts and then as
#: JSON (tracemalloc peak, whole window recorded minus none). Phase granularity: 13.1 and 17.4 KB (tiny
#: model, 2 and 8 cores, batch 1 and 32, 16,384 recorded layer-steps), 11.8 KB (paper workload, 2,048).
#: Instruction granularity grows with the weight blocks per layer: 27.3 and 39.9 KB (tiny model), 61.9 KB
#: (paper workload). Rounded up.
HOST_BYTES_PER_TIMELINE_CORE_STEP = {"phase": 18 * 1024, "instruction": 64 * 1024}
#: Live capture (PyTorch decode): float32 K and V caches per row (8 x kv_dim bytes), MLP input and
#: output caches per (sequence, layer, position in a frame) (8 x hidden bytes), plus decision logs and
#: results. Measured on fastcar-tiny with 8 to 96 rows of batch: 750 to 870 B/row, of which the two caches
#: are 640 B/row; the rest rounded up to this.
HOST_CAPTURE_EXTRA_BYTES_PER_ROW = 256
#: Interpreter, numpy/pandas/pyarrow/plotly (measured 122 MB after imports, 160 MB at the end of a small
#: run), and PyTorch plus the model for a capture (about 280 MB more).
HOST_BASE_BYTES = 256 << 20
HOST_CAPTURE_BASE_BYTES = 512 << 20


def host_memory_bytes() -> int:
    """This machine's physical memory, or the control group's limit when that is lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def host_memory_estimate(w: Workload) -> tuple[int, str]:
    """Bytes of host memory a run of ``w`` needs (estimate) and the breakdown naming the keys."""
    from accelerator.capacity import gib

    v, layers, cores = w.video, w.model.layers, w.hardware.cores
    rows = v.batch * layers * v.steps
    batch = f"batch {v.batch} (video.prompts {v.prompts}{' x 2 for video.cfg' if v.cfg else ''})"
    parts = [
        (
            rows * HOST_BYTES_PER_ROW,
            f"trace rows {batch} x model.layers {layers} x video.frames {v.frames} x "
            f"video.tokens_per_frame {v.tokens_per_frame} = {rows:,} rows x {HOST_BYTES_PER_ROW} B",
        )
    ]
    mode = w.simulation.mode
    fixed = HOST_BYTES_PER_LAYER_STEP_BY_MODE[mode]
    per_step = fixed + cores * HOST_BYTES_PER_CORE_STEP[mode]
    parts.append(
        (
            layers * v.steps * per_step,
            f"{mode} model arrays model.layers x decode steps x (hardware.cores {cores} x "
            f"{HOST_BYTES_PER_CORE_STEP[mode]} B + {fixed} B)",
        )
    )
    recorded = len(timeline_window(w)) if mode == "event" else 0
    if recorded:
        active = min(cores, v.batch)
        per_core_step = HOST_BYTES_PER_TIMELINE_CORE_STEP[w.simulation.granularity]
        parts.append(
            (
                recorded * layers * active * per_core_step,
                f"timeline outputs.timeline_steps {recorded} x model.layers x {active} cores x "
                f"{per_core_step} B ({w.simulation.granularity} granularity)",
            )
        )
    base = HOST_BASE_BYTES
    if w.trace.source == "capture":
        m = w.model
        per_row = 8 * m.kv_dim + 8 * m.hidden // v.frames + HOST_CAPTURE_EXTRA_BYTES_PER_ROW
        parts.append((rows * per_row, f"capture (model.hidden, model.kv_heads x head_dim) {per_row} B/row"))
        base += HOST_CAPTURE_BASE_BYTES
    parts.append((base, "interpreter and libraries"))
    total = sum(b for b, _ in parts)
    return total, "; ".join(f"{gib(b)} {what}" for b, what in parts)


def check_host_memory(w: Workload, origin: str = "") -> None:
    """Refuse a workload whose simulation would not fit this machine's memory (instead of a MemoryError,
    swapping or the kernel's OOM killer hours later)."""
    from accelerator.capacity import gib

    need, breakdown = host_memory_estimate(w)
    have = host_memory_bytes()
    if need > have:
        prefix = f"{origin}: " if origin else ""
        raise WorkloadError(
            f"{prefix}video.prompts x model.layers x video.frames x video.tokens_per_frame: too large to "
            f"simulate here: about {gib(need)} of host memory needed, this machine has {gib(have)} "
            f"({breakdown})"
        )


def check_capacity(w: Workload, origin: str = "") -> None:
    """Raise :class:`CapacityError` naming every memory group too small for what is placed in it."""
    from accelerator.capacity import shortfalls

    short = shortfalls(memory_use(w))
    if short:
        prefix = f"{origin}: " if origin else ""
        raise CapacityError(
            prefix
            + "; ".join(f"hardware.memory.{u.group}.capacity_GiB: too small: {u.describe()}" for u in short)
        )


def dump_resolved(w: Workload) -> str:
    return yaml.safe_dump(w.model_dump(mode="json"), sort_keys=False)
