"""The one exception family for bad input: the CLI turns any :class:`InputError` into its message on one
line and exit code 2. Everything else that escapes is an internal failure (exit 1).

Also the small helpers every reader of untrusted files uses to check values and to quote them back.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any


class InputError(ValueError):
    """Bad input (a file, a key, a value, an output location): the message is shown to the user as is,
    so it names what is wrong and why in one line."""


def clip(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters: error messages stay one line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(value: Any, limit: int = 60) -> str:
    """A value from a file or the command line, quoted back in an error message."""
    return clip(repr(value), limit)


def reason(exc: BaseException, limit: int = 300) -> str:
    """A library's exception as the reason part of an error message."""
    return clip(str(exc), limit) or type(exc).__name__


def is_int(value: Any) -> bool:
    """An integer that is not a boolean (JSON and YAML booleans are ints to Python)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number that is not a boolean (NaN and infinities included)."""
    return isinstance(value, Real) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    return is_number(value) and math.isfinite(value)
