"""What the codec's parts share: the reason codes, the errors, wire constants and types."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Literal, get_args

SOE_MAGIC: Final = b"\xc3\x01"
_HEADER_LEN: Final = 10
DEFAULT_SCHEMA_DIR: Final = Path(__file__).resolve().parent.parent

ReasonCode = Literal[
    "bad_key",
    "too_large",
    "empty",
    "bad_header",
    "unknown_fingerprint",
    "wrong_record",
    "bad_avro",
    "bad_json",
    "validation",
    "no_registry",
    "unknown_schema_id",
    "incompatible_schema",
]
REASON_CODES: Final[frozenset[str]] = frozenset(get_args(ReasonCode))

_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_ONE_MS: Final = timedelta(milliseconds=1)
_WHITESPACE: Final = b" \t\r\n"
_COMPLEX: Final = frozenset({"record", "error", "enum", "fixed", "array", "map"})
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")

# Appended to the enum symbols of the reading copies: every negative or out-of-range index that
# fits a one- or two-byte varint decodes to this string instead of a wrong symbol.
_BAD_ENUM: Final = "\x00corrupt enum index\x00"
_ENUM_PADDING: Final = 8192

Conv = Callable[[Any, str], Any]
Build = Callable[[Any], Any]
Check = Callable[[Any], bool]


class DecodeError(ValueError):
    """A value or key the pipeline rejects; ``str(exc)`` is the readable reason."""

    reason_code: str
    reason: str

    def __init__(self, reason_code: ReasonCode, reason: str) -> None:
        super().__init__(reason)
        self.reason_code = reason_code
        self.reason = reason

    def __str__(self) -> str:
        return self.reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.reason_code, self.reason))


class EncodeError(ValueError):
    """A record that does not fit its schema (a bug on our side, or bad data in encode_dict)."""


class SchemaLoadError(ValueError):
    """The ``.avsc`` files are inconsistent, or do not match the Python records."""


class _Invalid(Exception):
    """Internal: a JSON/dict value does not fit the schema; ``args[0]`` is the full reason."""


class _Truncated(Exception):
    pass


class _Corrupt(Exception):
    pass
