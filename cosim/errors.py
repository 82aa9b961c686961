"""The one exception family for bad input: the CLI turns any :class:`InputError` into its message on one
line and exit code 2. Everything else that escapes is an internal failure (exit 1)."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input (a file, a key, a value, an output location): the message is shown to the user as is,
    so it names what is wrong and why in one line."""
