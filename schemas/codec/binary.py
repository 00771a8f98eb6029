"""Avro's binary encoding of flat records, by a *program* compiled once from a record's schema:
records written from rows of their field values, and read into the dicts fastavro returns.

``compiled._compile_writer`` and ``compiled._compile_reader`` turn a record schema into a
program: one op per field, in the schema's order, saying how its value is written or read and
where it is (its index in the row, or its name in the dict). ``writer_for(program)`` and
``reader_for(program)`` are the functions that run it. ``streams/compiled.py`` compiles this
module with Cython, as the worker's other hot modules; the ``cython.compiled`` code and the C
types of ``cython.locals`` are what the compiled module adds (Python ignores them).

**Writing** (every record the worker publishes: a fired timer writes two, an event one to three).
Compiled: ``write_row`` runs the program over a buffer of C bytes, copying the UTF-8 a ``str``
already holds and writing varints from C integers: about a fifth of the time of the Python
writer. As Python: straight-line source generated from the program (interpreting it in Python
takes twice as long). Both write what fastavro writes (``tests/unit/test_codec_writer.py``, which
``make unit`` runs compiled and as Python). What a value cannot be written as (a ``str`` where a
long belongs, a long past 64 bits, a symbol not in an enum) raises; the codec then encodes the
record with fastavro, which says what is wrong.

**Reading** (every input event, once: the newest version of a flat record). Compiled:
``read_record`` reads the value's bytes in place, a page view in about a third of fastavro's
time. As Python there is no reader (``reader_for`` gives ``None``): fastavro reads. **It decides
nothing on its own**: it reads only what it can read exactly as fastavro does, and raises
``Unread`` on anything else (bytes past the value's end, a length or a count below zero, a
varint longer than a long, UTF-8 that does not decode, a boolean byte other than 0 or 1, an enum
index outside the symbols, a union branch that is not there, bytes left over). The codec then
reads the same value with fastavro, which returns its value or says what is wrong: an input's
fate (its record, or its dead letter and reason) is fastavro's whichever reads it
(``tests/unit/test_codec_reader.py`` compares the two on valid, truncated, corrupted, hostile
and random values).
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import cython

if cython.compiled:  # the C API: only the compiled module runs these imports
    from cython.cimports.cpython.bytes import (
        PyBytes_AS_STRING,
        PyBytes_FromStringAndSize,
        PyBytes_GET_SIZE,
    )
    from cython.cimports.cpython.mem import PyMem_Free, PyMem_Malloc
    from cython.cimports.cpython.unicode import PyUnicode_AsUTF8AndSize, PyUnicode_DecodeUTF8
    from cython.cimports.libc.string import memcpy

# What an op does (its first element): C constants in the compiled module (``op`` makes ops by
# the Avro type's name). An op is a tuple (kind, where, argument):
# * where: the value's index in the row (writing) or its field's name (reading); unused for a
#   map's values and a union's branch;
# * argument: "enum": (its symbols, {symbol: its index}); "map": the values' op; "optional" (a
#   union of null and one other type): (the null branch's index, the other branch's op).
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

COMPILED: bool = cython.compiled  # this module runs compiled (else as Python)

Op = tuple[int, Any, Any]
Program = tuple[Op, ...]
Writer = Callable[[Sequence[Any], bytes], bytes]
Read = Callable[[bytes, int], dict[str, Any]]


def op(kind: str, where: int | str, argument: Any = None) -> Op:
    """The op of a value of ``kind`` (an Avro type's name, or "optional") at ``where``."""
    return (KINDS[kind], where, argument)


# === writing ================================================================================
_INT64 = (-(2**63), 2**63 - 1)
_INT32 = (-(2**31), 2**31 - 1)
_pack_double = struct.Struct("<d").pack
_pack_float = struct.Struct("<f").pack


def writer_for(program: Program) -> Writer:
    """``write(row, header) -> header + the Avro body`` of the record whose field values the row
    holds, by the program."""
    if cython.compiled:
        return partial(write_row, program)
    return _python_writer(program)


def row_writer(
    program: Program,
    headers: dict[str, bytes],
    name: str,
    fallback: Callable[[Sequence[Any]], bytes],
) -> Callable[[Sequence[Any]], bytes]:
    """``Codec.row_encoder``'s function: ``row`` written by the program after the record's header
    as it is at the call (``headers[name]``: the registry framing may replace it), or by
    ``fallback`` (fastavro, which says what is wrong) where the writer raises. A closure of this
    module: compiled, a row costs no interpreted frame (two before: about 1 % of a fired timer's
    instructions)."""
    write = writer_for(program)

    def encode_row(row: Sequence[Any]) -> bytes:
        try:
            return write(row, headers[name])
        except Exception:
            return fallback(row)

    return encode_row


# --- compiled: the program run over a buffer of C bytes -------------------------------------
_STACK = 1024  # the bytes a record is written into before it needs the heap
_Out = cython.struct(
    data=cython.p_char, size=cython.Py_ssize_t, capacity=cython.Py_ssize_t, heap=cython.bint
)
_OutP = cython.typedef(cython.pointer(_Out))


@cython.locals(program=tuple, op=tuple)
def write_row(program: Program, row: Sequence[Any], header: bytes) -> bytes:
    """The compiled writer (``writer_for``)."""
    if not cython.compiled:
        raise RuntimeError("write_row runs compiled; as Python, writer_for generates the writer")
    if not isinstance(header, bytes):  # read in place below
        raise TypeError(f"the header must be bytes, not {type(header).__name__}")
    out = cython.declare(_Out)
    stack = cython.declare(cython.char[1024])
    out.data = stack
    out.size = 0
    out.capacity = _STACK
    out.heap = False
    try:
        _put(cython.address(out), PyBytes_AS_STRING(header), PyBytes_GET_SIZE(header))
        for op in program:
            _write(cython.address(out), op, row[op[1]])
        return PyBytes_FromStringAndSize(out.data, out.size)
    finally:
        if out.heap:
            PyMem_Free(out.data)


@cython.cfunc
@cython.exceptval(-1)
@cython.returns(cython.int)
@cython.locals(out=_OutP, need=cython.Py_ssize_t, capacity=cython.Py_ssize_t,
               data=cython.p_char)  # fmt: skip
def _reserve(out: Any, need: int) -> int:
    """Room for ``need`` more bytes."""
    if out.size + need <= out.capacity:
        return 0
    capacity = max(2 * out.capacity, out.size + need)
    data = cython.cast(cython.p_char, PyMem_Malloc(capacity))
    if data == cython.NULL:
        raise MemoryError()
    memcpy(data, out.data, out.size)
    if out.heap:
        PyMem_Free(out.data)
    out.data = data
    out.capacity = capacity
    out.heap = True
    return 0


@cython.cfunc
@cython.exceptval(-1)
@cython.returns(cython.int)
@cython.locals(out=_OutP, data=cython.p_const_char, size=cython.Py_ssize_t)
def _put(out: Any, data: Any, size: int) -> int:
    _reserve(out, size)
    memcpy(out.data + out.size, data, size)
    out.size += size
    return 0


@cython.cfunc
@cython.exceptval(-1)
@cython.returns(cython.int)
@cython.locals(out=_OutP, byte=cython.char)
def _put_byte(out: Any, byte: int) -> int:
    _reserve(out, 1)
    out.data[out.size] = byte
    out.size += 1
    return 0


@cython.cfunc
@cython.exceptval(-1)
@cython.returns(cython.int)
@cython.locals(out=_OutP, n=cython.longlong, z=cython.ulonglong)
def _put_long(out: Any, n: int) -> int:
    """Avro's long: zigzag, then 7 bits a byte, least significant first. Past 64 bits, or not an
    integer: raises (as the caller converts it)."""
    z = (cython.cast(cython.ulonglong, n) << 1) ^ cython.cast(cython.ulonglong, n >> 63)
    _reserve(out, 10)
    while z >= 0x80:
        out.data[out.size] = cython.cast(cython.char, (z & 0x7F) | 0x80)
        out.size += 1
        z >>= 7
    out.data[out.size] = cython.cast(cython.char, z)
    out.size += 1
    return 0


@cython.cfunc
@cython.exceptval(-1)
@cython.returns(cython.int)
@cython.locals(out=_OutP, size=cython.Py_ssize_t, data=cython.p_const_char)
def _put_string(out: Any, value: str) -> int:
    """Avro's string: its UTF-8 length as a long, then the UTF-8 (which a ``str`` keeps)."""
    size = 0
    data = PyUnicode_AsUTF8AndSize(value, cython.address(size))
    _put_long(out, size)
    return _put(out, data, size)


@cython.cfunc
@cython.exceptval(-1)
@cython.returns(cython.int)
@cython.locals(out=_OutP, op=tuple, kind=cython.int, fixed=bytes, branches=tuple)
def _write(out: Any, op: Op, value: Any) -> int:
    kind = op[0]
    if kind == _STRING:
        return _put_string(out, value)
    if kind == _LONG:
        return _put_long(out, value)
    if kind == _OPTIONAL:
        branches = op[2]
        if value is None:
            return _put_long(out, branches[0])
        _put_long(out, 1 - branches[0])
        return _write(out, branches[1], value)
    if kind == _ENUM:
        return _put_long(out, op[2][1][value])
    if kind == _MAP:
        if value:
            _put_long(out, len(value))
            for key, item in value.items():
                _put_string(out, key)
                _write(out, op[2], item)
        return _put_byte(out, 0)
    if kind == _INT:
        if not _INT32[0] <= value <= _INT32[1]:
            raise OverflowError(f"{value} is out of the int range")
        return _put_long(out, value)
    if kind == _BOOLEAN:
        return _put_byte(out, 1 if value else 0)
    if kind == _NULL:
        if value is not None:
            raise TypeError(f"{value!r} where null belongs")
        return 0
    if kind == _BYTES:
        fixed = bytes(value)
        _put_long(out, len(fixed))
    elif kind == _DOUBLE:
        fixed = _pack_double(value)
    elif kind == _FLOAT:
        fixed = _pack_float(value)
    else:
        raise ValueError(f"no op {kind}")
    return _put(out, PyBytes_AS_STRING(fixed), len(fixed))


# --- as Python: straight-line source generated from the program -----------------------------
def _python_writer(program: Program) -> Writer:
    constants: dict[str, Any] = {}
    lines = ["def write(r, header):", " p = [header]", " a = p.append"]
    for op in program:
        lines += _source(op, f"r[{op[1]}]", " ", constants)
    lines.append(" return b''.join(p)")
    scope: dict[str, Any] = {
        "_varint": _varint, "_int": _int, "_LENGTH": _LENGTH, "_pack_double": _pack_double,
        "_pack_float": _pack_float, **constants,
    }  # fmt: skip
    exec("\n".join(lines), scope)
    write: Writer = scope["write"]
    return write


def _source(op: Op, value: str, indent: str, constants: dict[str, Any]) -> list[str]:
    """Lines appending the encoding of ``value`` (an expression) to ``p``."""
    kind, _, argument = op
    if kind == _OPTIONAL:
        null_branch, other = argument
        return [
            f"{indent}u = {value}",
            f"{indent}if u is None:",
            f"{indent} a({_varint(null_branch)!r})",
            f"{indent}else:",
            f"{indent} a({_varint(1 - null_branch)!r})",
            *_source(other, "u", indent + " ", constants),
        ]
    if kind == _ENUM:
        name = f"_E{len(constants)}"
        constants[name] = {symbol: _varint(index) for symbol, index in argument[1].items()}
        return [f"{indent}a({name}[{value}])"]
    if kind == _MAP:
        return [
            f"{indent}m = {value}",
            f"{indent}if m:",
            f"{indent} a(_varint(len(m)))",
            f"{indent} for k, v in m.items():",
            f"{indent}  b = k.encode()",
            f"{indent}  n = len(b)",
            f"{indent}  a(_LENGTH[n] if n < 4096 else _varint(n))",
            f"{indent}  a(b)",
            *_source(argument, "v", indent + "  ", constants),
            f"{indent}a(b'\\x00')",
        ]
    if kind in (_STRING, _BYTES):
        return [
            f"{indent}b = {value}.encode()" if kind == _STRING else f"{indent}b = bytes({value})",
            f"{indent}n = len(b)",
            f"{indent}a(_LENGTH[n] if n < 4096 else _varint(n))",
            f"{indent}a(b)",
        ]
    return [
        {
            _LONG: f"{indent}a(_varint({value}))",
            _INT: f"{indent}a(_int({value}))",
            _BOOLEAN: f"{indent}a(b'\\x01' if {value} else b'\\x00')",
            _DOUBLE: f"{indent}a(_pack_double({value}))",
            _FLOAT: f"{indent}a(_pack_float({value}))",
            _NULL: f"{indent}if {value} is not None: raise TypeError('not null')",
        }[kind]
    ]


def _varint(n: int) -> bytes:
    """Avro's variable-length zigzag encoding of ``n`` (a long)."""
    if -64 <= n < 64:
        return _SMALL[n]
    if not _INT64[0] <= n <= _INT64[1]:
        raise OverflowError(f"{n} is out of the long range")
    n = (n << 1) ^ (n >> 63)
    if n < 0x4000:
        return _LAST[n]
    # 14 bits at a time from tables (a time in ms is three lookups, not six turns of a loop).
    out = []
    while n >= 0x4000:
        out.append(_GROUPS[n & 0x3FFF])
        n >>= 14
    out.append(_LAST[n])
    return b"".join(out)


def _int(n: int) -> bytes:
    if not _INT32[0] <= n <= _INT32[1]:
        raise OverflowError(f"{n} is out of the int range")
    return _varint(n)


def _unsigned(n: int) -> bytes:
    """The 7-bit groups of ``n >= 0``, least significant first, the last without the high bit."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Indexed by the value itself: negative indexes count from the end.
_SMALL = tuple(_unsigned(n << 1) for n in range(64)) + tuple(
    _unsigned((n << 1) ^ -1) for n in range(-64, 0)
)
# 14 bits followed by more (both bytes with the high bit), and the last 14 bits or fewer.
_GROUPS = tuple(bytes(((n & 0x7F) | 0x80, (n >> 7) | 0x80)) for n in range(1 << 14))
_LAST = tuple(_unsigned(n) for n in range(1 << 14))
# The varints of the lengths most strings have.
_LENGTH = tuple(_varint(n) for n in range(4096))


# === reading ================================================================================
class Unread(ValueError):
    """Not read here: fastavro reads it (and says what is wrong with it, if anything)."""


def reader_for(program: Program, build: Callable[..., Any] | None = None) -> Read | None:
    """``read(value, start) -> the record's dict`` (the body from ``start`` to the end), compiled;
    ``None`` as Python (fastavro reads), and on a big-endian machine (Avro's doubles are
    little-endian; the C code copies them as the machine holds them). ``build``: the record is
    ``build(*values)`` instead, the values in the program's (the schema's) field order: a
    dataclass whose fields are the schema's, in its order, built without a dict of keywords."""
    if cython.compiled and sys.byteorder == "little":
        return partial(read_record, program, build)
    return None


def soe_decoder(
    fast: Mapping[bytes, tuple[type, Callable[[bytes, int], Any]]],
    max_bytes: int,
    magic: bytes,
    header_len: int,
    slow: Callable[[bytes, type | None], Any],
) -> Callable[[bytes, type | None], Any]:
    """``decode(value, expected)``: ``Codec.decode``'s usual case in compiled code, else
    ``slow`` (``Codec.decode`` itself). The usual case: single-object encoding (``magic``) of a
    fingerprint in ``fast`` (fingerprint -> the record's class and its compiled reader, from
    ``header_len`` on), of ``expected``'s class, within ``max_bytes``, that the reader reads.
    Anything else, and any value the reader refuses, goes to ``slow``, which decodes it or says
    what is wrong: the same record or ``DecodeError`` either way. Three interpreted frames fewer
    a message (``Codec.decode``, ``_decode_avro``, ``_read_body``), session 25."""

    def decode(value: bytes, expected: type | None) -> Any:
        size = len(value)
        if header_len <= size <= max_bytes and value[:2] == magic:
            entry = fast.get(value[2:header_len])
            if entry is not None and entry[0] is expected:
                try:
                    return entry[1](value, header_len)
                except Exception:  # Unread (or a bug there): ``slow`` reads it, or says why not
                    pass
        return slow(value, expected)

    return decode


# --- compiled: the program run over the value's bytes ---------------------------------------
_In = cython.struct(data=cython.p_const_uchar, at=cython.Py_ssize_t, end=cython.Py_ssize_t)
_InP = cython.typedef(cython.pointer(_In))


@cython.locals(program=tuple, op=tuple, record=dict, values=list)
def read_record(
    program: Program, build: Callable[..., Any] | None, value: bytes, start: int
) -> Any:
    """The compiled reader (``reader_for``)."""
    if not cython.compiled:
        raise RuntimeError("read_record runs compiled; as Python, fastavro reads")
    if not isinstance(value, bytes):
        raise Unread("not bytes")
    source = cython.declare(_In)
    source.data = cython.cast(cython.p_const_uchar, PyBytes_AS_STRING(value))
    source.at = start
    source.end = PyBytes_GET_SIZE(value)
    if source.at < 0 or source.at > source.end:
        raise Unread("start outside the value")
    if build is not None:
        values = [_read(cython.address(source), op) for op in program]
        if source.at != source.end:
            raise Unread("bytes after the record")
        return build(*values)
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
def _take_long(source: Any) -> int:
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
def _take_length(source: Any) -> int:
    """A length (of a string or bytes) that the value holds."""
    size = _take_long(source)
    if size < 0 or size > source.end - source.at:
        raise Unread("a length below zero or past the value's end")
    return cython.cast(cython.Py_ssize_t, size)


@cython.cfunc
@cython.locals(source=_InP, size=cython.Py_ssize_t, start=cython.Py_ssize_t)
def _take_string(source: Any) -> str:
    size = _take_length(source)
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
        return _take_string(source)
    if kind == _LONG:
        return _take_long(source)
    if kind == _OPTIONAL:
        branch = op[2]
        index = _take_long(source)
        if index == branch[0]:
            return None
        if index != 1 - branch[0]:
            raise Unread("no such branch of the union")
        return _read(source, branch[1])
    if kind == _INT:
        index = _take_long(source)
        if index < -(2**31) or index > 2**31 - 1:
            raise Unread("an int past 32 bits")
        return index
    if kind == _ENUM:
        symbols = op[2][0]
        index = _take_long(source)
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
            count = _take_long(source)
            if count == 0:
                return items
            if count < 0:  # a block with its size in bytes
                count = -count
                _take_long(source)
            i = 0
            while i < count:
                key = _take_string(source)
                items[key] = _read(source, op[2])
                i += 1
    if kind == _BYTES:
        size = _take_length(source)
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
