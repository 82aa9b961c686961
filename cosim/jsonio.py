"""JSON as the tool writes it (summaries, quality files): no inf/NaN, numpy scalars as plain numbers,
keys sorted, two-space indent, a final newline. Imports nothing from the project, so anything may use it."""

from __future__ import annotations

import json
import math


def clean_json(value):
    """JSON has no inf/NaN: write them as null; numpy scalars as plain numbers."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps(data: dict) -> str:
    return json.dumps(clean_json(data), indent=2, sort_keys=True) + "\n"
