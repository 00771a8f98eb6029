"""Durations as people write them (``250ms``, ``45s``, ``30m``, ``16h``, ``3d``), in milliseconds,
the unit of the whole pipeline. Shared by the process settings and the journey configuration."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration_ms(value: Any) -> int:
    """``"16h"`` -> 57_600_000. A bare number means seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration cannot be a boolean")
    if isinstance(value, int | float):
        return int(value * 1000)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(
            f"{value!r} is not a duration: use a number with ms, s, m, h or d (e.g. 16h, 3d)"
        )
    number, unit = match.groups()
    return int(float(number) * _UNITS_MS[unit or "s"])


def format_duration_ms(ms: int) -> str:
    """57_600_000 -> ``"16h"``: the largest unit that divides it (for documentation)."""
    for unit in ("d", "h", "m", "s"):
        if ms and ms % _UNITS_MS[unit] == 0:
            return f"{ms // _UNITS_MS[unit]}{unit}"
    return f"{ms}ms"


DurationMs = Annotated[int, BeforeValidator(parse_duration_ms)]
