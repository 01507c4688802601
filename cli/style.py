"""Colour on a terminal, plain text everywhere else.

Colour is used only when the stream is a terminal and `NO_COLOR` (https://no-color.org) is not
set to anything; pipes, files, `--json` and CI logs get plain text. States are coloured by what
they mean to a person: green ended well, red ended badly, yellow waits for someone.
"""

from __future__ import annotations

import os
from typing import IO

_CODES = {"green": "32", "red": "31", "yellow": "33", "bold": "1", "dim": "2"}

_STATE_COLOUR = {
    "completed": "green",
    "done": "green",
    "failed": "red",
    "rolled_back": "red",
    "rolling_back": "red",
    "cancelled": "yellow",
    "rejected": "yellow",
    "awaiting_approval": "yellow",
    "paused": "yellow",
}


def use_colour(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR"):  # set and not empty, as no-color.org says
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def paint(text: str, colour: str, *, enabled: bool) -> str:
    return f"\033[{_CODES[colour]}m{text}\033[0m" if enabled else text


def state(text: str, *, enabled: bool) -> str:
    """A plan or replacement state, coloured by its meaning when `enabled`."""
    colour = _STATE_COLOUR.get(text)
    return paint(text, colour, enabled=enabled) if colour else text
