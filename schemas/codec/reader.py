"""Avro's binary encoding of a flat record read into the dict fastavro would return, compiled.

``compiled._compile_reader`` turns the newest schema of a record into a *program*: one op per
field, in the schema's order, saying how it is read. ``reader_for(program)`` is
``read(value, start) -> dict`` when this module runs compiled (``streams/compiled.py`` compiles
it with Cython, as the worker's other hot modules: a page view read in about a third of
fastavro's time, and every input event is read once), ``None`` as Python: the codec then reads
with fastavro, as it always does where this has no answer.

**It decides nothing on its own.** It reads only what it can read exactly as fastavro does, and
raises ``Unread`` on anything else: bytes past the value's end, a length or a count below zero,
a varint longer than a long, UTF-8 that does not decode, a boolean byte other than 0 or 1, an
enum index outside the symbols, a union branch that is not there, bytes left over. The codec
then reads the same value with fastavro, which returns its value or says what is wrong: so an
input's fate (its record, or its dead letter and reason) is fastavro's whichever reads it
(``tests/unit/test_codec_reader.py`` compares the two on valid, truncated and corrupted
values).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from typing import Any

import cython

if cython.compiled:  # the C API: only the compiled module runs these imports
    from cython.cimports.cpython.bytes import PyBytes_AS_STRING, PyBytes_FromStringAndSize
    from cython.cimports.cpython.unicode import PyUnicode_DecodeUTF8
    from cython.cimports.libc.string import memcpy

# What an op reads (its first element): C constants in the compiled module (``op`` makes ops by
# the Avro type's name). An op is a tuple (kind, field name, argument):
# * argument: "enum": the symbols (without the reading schema's padding); "map": the values'
#   op; "optional" (a union of null and one other type): (the null branch's index, the other
#   branch's op); None otherwise.
_STRING = cython.declare(cython.int, 1)
_BYTES = cython.declare(cython.int, 2)
_LONG = cython.declare(cython.int, 3)
_INT = cython.declare(cython.int, 4)
_BOOLEAN = cython.declare(cython.int, 5)
_DOUBLE = cython.declare(cython.int, 6)
_FLOAT = cython.declare(cython.int, 7)
_NULL = cython.declare(cython.int, 8)
_ENUM = cython.declare(cython.int, 9)
_MAP = cython.declare(cython.int, 10)
_OPTIONAL = cython.declare(cython.int, 11)
KINDS = {
    "string": _STRING, "bytes": _BYTES, "long": _LONG, "int": _INT, "boolean": _BOOLEAN,
    "double": _DOUBLE, "float": _FLOAT, "null": _NULL, "enum": _ENUM, "map": _MAP,
    "optional": _OPTIONAL,
}  # fmt: skip

Op = tuple[int, str, Any]
Program = tuple[Op, ...]
Read = Callable[[bytes, int], dict[str, Any]]


class Unread(ValueError):
    """Not read here: fastavro reads it (and says what is wrong with it, if anything)."""


def op(kind: str, name: str, argument: Any = None) -> Op:
    """The op reading a value of ``kind`` (an Avro type's name, or "optional") into ``name``."""
    return (KINDS[kind], name, argument)


def reader_for(program: Program) -> Read | None:
    """``read(value, start) -> the record's dict`` (the body from ``start`` to the end), compiled;
    ``None`` as Python (fastavro reads), and on a big-endian machine (Avro's doubles are
    little-endian; the C code copies them as the machine holds them)."""
    if cython.compiled and sys.byteorder == "little":
        return partial(read_record, program)
    return None


# --- compiled: the program run over the value's bytes ---------------------------------------
_In = cython.struct(data=cython.p_const_uchar, at=cython.Py_ssize_t, end=cython.Py_ssize_t)
_InP = cython.typedef(cython.pointer(_In))


@cython.locals(program=tuple, op=tuple, record=dict)
def read_record(program: Program, value: bytes, start: int) -> dict[str, Any]:
    """The compiled reader (``reader_for``)."""
    if not cython.compiled:
        raise RuntimeError("read_record runs compiled; as Python, fastavro reads")
    if not isinstance(value, bytes):
        raise Unread("not bytes")
    source = cython.declare(_In)
    source.data = cython.cast(cython.p_const_uchar, PyBytes_AS_STRING(value))
    source.at = start
    source.end = len(value)
    if source.at < 0 or source.at > source.end:
        raise Unread("start outside the value")
    record = {}
    for op in program:
        record[op[1]] = _read(cython.address(source), op)
    if source.at != source.end:
        raise Unread("bytes after the record")
    return record


@cython.cfunc
@cython.locals(source=_InP, shift=cython.int, byte=cython.uint, z=cython.ulonglong)
@cython.returns(cython.longlong)
@cython.exceptval(check=True)
def _long(source: Any) -> int:
    """A zigzag varint of at most 64 bits."""
    z = 0
    shift = 0
    while True:
        if source.at >= source.end:
            raise Unread("the value ends inside a number")
        byte = source.data[source.at]
        source.at += 1
        if shift == 63 and byte > 1:
            raise Unread("a number past 64 bits")
        z |= cython.cast(cython.ulonglong, byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > 63:
            raise Unread("a number past 64 bits")
    return cython.cast(cython.longlong, (z >> 1) ^ (0 - (z & 1)))


@cython.cfunc
@cython.locals(source=_InP, size=cython.longlong)
@cython.returns(cython.Py_ssize_t)
@cython.exceptval(-1)
def _length(source: Any) -> int:
    """A length (of a string or bytes) that the value holds."""
    size = _long(source)
    if size < 0 or size > source.end - source.at:
        raise Unread("a length below zero or past the value's end")
    return cython.cast(cython.Py_ssize_t, size)


@cython.cfunc
@cython.locals(source=_InP, size=cython.Py_ssize_t, start=cython.Py_ssize_t)
def _string(source: Any) -> str:
    size = _length(source)
    start = source.at
    source.at += size
    try:
        return PyUnicode_DecodeUTF8(
            cython.cast(cython.p_const_char, source.data + start), size, cython.NULL
        )
    except UnicodeDecodeError:
        raise Unread("not UTF-8") from None


@cython.cfunc
@cython.locals(source=_InP, op=tuple, kind=cython.int, index=cython.longlong,
               size=cython.Py_ssize_t, count=cython.longlong, i=cython.longlong, items=dict,
               symbols=tuple, branch=tuple, start=cython.Py_ssize_t)  # fmt: skip
def _read(source: Any, op: Op) -> Any:
    kind = op[0]
    if kind == _STRING:
        return _string(source)
    if kind == _LONG:
        return _long(source)
    if kind == _OPTIONAL:
        branch = op[2]
        index = _long(source)
        if index == branch[0]:
            return None
        if index != 1 - branch[0]:
            raise Unread("no such branch of the union")
        return _read(source, branch[1])
    if kind == _INT:
        index = _long(source)
        if index < -(2**31) or index > 2**31 - 1:
            raise Unread("an int past 32 bits")
        return index
    if kind == _ENUM:
        symbols = op[2]
        index = _long(source)
        if index < 0 or index >= len(symbols):
            raise Unread("an enum index outside the symbols")
        return symbols[index]
    if kind == _BOOLEAN:
        if source.at >= source.end:
            raise Unread("the value ends inside a boolean")
        index = source.data[source.at]
        source.at += 1
        if index > 1:
            raise Unread("a boolean byte other than 0 or 1")
        return index == 1
    if kind == _MAP:
        items: dict[str, Any] = {}
        while True:
            count = _long(source)
            if count == 0:
                return items
            if count < 0:  # a block with its size in bytes
                count = -count
                _long(source)
            i = 0
            while i < count:
                key = _string(source)
                items[key] = _read(source, op[2])
                i += 1
    if kind == _BYTES:
        size = _length(source)
        start = source.at
        source.at += size
        return PyBytes_FromStringAndSize(
            cython.cast(cython.p_const_char, source.data + start), size
        )
    if kind == _DOUBLE:
        if source.end - source.at < 8:
            raise Unread("the value ends inside a double")
        number = cython.declare(cython.double)
        memcpy(cython.address(number), source.data + source.at, 8)
        source.at += 8
        return number
    if kind == _FLOAT:
        if source.end - source.at < 4:
            raise Unread("the value ends inside a float")
        single = cython.declare(cython.float)
        memcpy(cython.address(single), source.data + source.at, 4)
        source.at += 4
        return single
    if kind == _NULL:
        return None
    raise Unread(f"no op {kind}")
