"""Numbers for people: four significant digits, no exponent where a plain number reads better."""

from __future__ import annotations


def num(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if 1e4 <= abs(value) < 1e9:
        return f"{value:,.0f}"
    return f"{value:.4g}"
