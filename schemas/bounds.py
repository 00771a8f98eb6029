"""Bounds at the door: values the pipeline cannot carry to the end are rejected on arrival.

Avro says a field is a ``long``; the pipeline needs more: a money amount times a quantity must
still fit ClickHouse's Int64, a time must be one the calendar code and the timer index can do
arithmetic with, and a string must be a size a row, a trigger and a dead letter can carry. A
record outside these bounds becomes a dead letter (reason ``validation``) instead of failing
later, half-way through the journey, at the insert or in the state encoding.

Every field of every input record is checked by its kind (its name says it), so a field added
to a schema is bounded without another rule here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import cython

INT64_MAX = 2**63 - 1
# 1970-01-01 .. 2200-01-01 (exclusive), epoch ms. Timers add up to a year or so to these.
MIN_TIME_MS = 1
MAX_TIME_MS = 7_258_118_400_000
# Money in minor units: 10^12 is ten billion euros. Quantities: a million of one product.
# The largest line, 10^12 * 10^6, stays well inside Int64 (9.2 * 10^18).
MAX_MONEY_MINOR = 10**12
MAX_QUANTITY = 10**6
MAX_ITEMS = 1_000
# Characters. Identifiers and codes (kept in the state, in every trigger, 64 event ids per
# customer) are short; other text (URLs, comments, coupons) may be longer, not absurd.
MAX_ID_CHARS = 256
MAX_TEXT_CHARS = 10_000
SHORT_FIELDS = frozenset({"category", "currency", "carrier", "page_type", "time_zone", "locale"})
# Avro ``date`` birthday: days since 1970 (1900-01-01 .. 2200-01-01).
MIN_BIRTHDAY_DAYS, MAX_BIRTHDAY_DAYS = -25_567, 84_006


def bounds_problem(record: Any) -> str | None:
    """Why ``record`` (an input record, nested records included) is out of bounds, or ``None``."""
    if cython.compiled:  # ``journey compile``: the loop, compiled, is faster than the generated
        return _check(record, "")  # code interpreted (20k -> 4k instructions a page view)
    check = _CHECKS.get(type(record))
    if check is None:
        check = _CHECKS[type(record)] = _compile_check(type(record))
    return check(record)


# As Python, per record type, ``_check(record, "")`` turned into straight-line code: the same
# tests in the same order, without the loop over the plan and its tuple per field (every input
# record is checked: the loop was 2 % of the worker's CPU). Compiled (``journey compile``), the
# loop itself runs, faster than that code interpreted.
_CHECKS: dict[type, Callable[[Any], str | None]] = {}


def _compile_check(cls: type) -> Callable[[Any], str | None]:
    lines = ["def check(r):"]
    for name, limit, low, high in _plan(cls):
        problem = [f"p = _field_problem({name!r}, {name!r}, v)", "if p is not None: return p"]
        lines += [
            f" v = r.{name}",
            " if v is not None:",
            "  t = type(v)",
            "  if t is int:",
            f"   if not {low} <= v <= {high}:",
            *(f"    {line}" for line in problem),
            "  elif t is str:",
            f"   if len(v) > {limit}:",
            *(f"    {line}" for line in problem),
            "  elif t is not float:",
            *(f"   {line}" for line in problem),
        ]
    lines.append(" return _totals_problem(r, '')")
    scope: dict[str, Any] = {"_field_problem": _field_problem, "_totals_problem": _totals_problem}
    exec("\n".join(lines), scope)  # the source is built from the dataclass's field names
    check: Callable[[Any], str | None] = scope["check"]
    return check


# Per record type, its fields with the bounds their names give: (name, the longest string, the
# smallest and the largest int). Looked up once per type, not per record (every input record
# is checked: ``dataclasses.fields`` and the name tests per field were 4 % of the worker's CPU).
_Plan = tuple[tuple[str, int, int, int], ...]
_PLANS: dict[type, _Plan] = {}


def _plan(cls: type) -> _Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        plan = _PLANS[cls] = tuple(
            (item.name, _str_limit(item.name), *_int_range(item.name))
            for item in dataclasses.fields(cls)
        )
    return plan


def _check(record: Any, prefix: str) -> str | None:
    for name, limit, low, high in _plan(type(record)):
        value = getattr(record, name)
        if value is None:
            continue
        kind = type(value)
        # The common cases, accepted at once; the rest (and every problem, for its message) as
        # ``_field_problem`` says.
        if kind is int:
            if low <= value <= high:
                continue
        elif kind is str:
            if len(value) <= limit:
                continue
        elif kind is float:
            continue
        problem = _field_problem(prefix + name, name, value)
        if problem is not None:
            return problem
    return _totals_problem(record, prefix)


def _str_limit(name: str) -> int:
    short = name.endswith("_id") or name in SHORT_FIELDS or name == "key"
    return MAX_ID_CHARS if short else MAX_TEXT_CHARS


def _int_range(name: str) -> tuple[int, int]:
    """The ints ``_int_problem`` accepts for a field of this name (both ends included)."""
    if name.endswith("_at"):
        return MIN_TIME_MS, MAX_TIME_MS - 1
    if name.endswith("_minor"):
        return 0, MAX_MONEY_MINOR
    if name == "quantity":
        return 0, MAX_QUANTITY
    if name == "birthday":
        return MIN_BIRTHDAY_DAYS, MAX_BIRTHDAY_DAYS - 1
    return -INT64_MAX, INT64_MAX


def _field_problem(path: str, name: str, value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return _int_problem(path, name, value)
    if isinstance(value, str):
        limit = _str_limit(name)
        if len(value) > limit:
            return f"{path} has {len(value)} characters; at most {limit} are accepted"
        return None
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            return f"{path} has {len(value)} entries; at most {MAX_ITEMS} are accepted"
        for index, element in enumerate(value):
            if dataclasses.is_dataclass(element):
                problem = _check(element, f"{path}[{index}].")
            else:
                problem = _field_problem(f"{path}[{index}]", name, element)
            if problem is not None:
                return problem
        return None
    if isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            return f"{path} has {len(value)} entries; at most {MAX_ITEMS} are accepted"
        for key, element in value.items():
            problem = _field_problem(f"{path}[{str(key)[:32]!r}]", name, element) or (
                _field_problem(f"{path} key", "key", key)
            )
            if problem is not None:
                return problem
    return None


def _int_problem(path: str, name: str, value: int) -> str | None:
    if name.endswith("_at"):
        if not MIN_TIME_MS <= value < MAX_TIME_MS:
            return f"{path} {value} is not a time between 1970 and 2200 (epoch milliseconds)"
    elif name.endswith("_minor"):
        if not 0 <= value <= MAX_MONEY_MINOR:
            return f"{path} {value} is outside 0..{MAX_MONEY_MINOR} (minor units)"
    elif name == "quantity":
        if not 0 <= value <= MAX_QUANTITY:
            return f"{path} {value} is outside 0..{MAX_QUANTITY}"
    elif name == "birthday":
        if not MIN_BIRTHDAY_DAYS <= value < MAX_BIRTHDAY_DAYS:
            return f"{path} {value} is not a date between 1900 and 2200 (days since 1970)"
    elif not -INT64_MAX <= value <= INT64_MAX:
        return f"{path} {value} does not fit a 64-bit integer"
    return None


def _totals_problem(record: Any, prefix: str) -> str | None:
    """Products and sums the pipeline computes from one record stay inside Int64."""
    quantity = getattr(record, "quantity", None)
    price = getattr(record, "unit_price_minor", None)
    if isinstance(quantity, int) and isinstance(price, int) and quantity * price > INT64_MAX:
        return f"{prefix}quantity * unit_price_minor does not fit a 64-bit integer"
    items = getattr(record, "items", None)
    if isinstance(items, list) and items:
        total = sum(item.quantity * item.unit_price_minor for item in items)
        if total > INT64_MAX:
            return f"{prefix}items add up to {total}, which does not fit a 64-bit integer"
    return None
