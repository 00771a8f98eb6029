"""Why fastavro could not read an Avro body (the slow path, errors only)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.codec.base import _INT_MAX, _INT_MIN, _Corrupt, _Truncated
from schemas.codec.compiled import _type_name
from schemas.codec.json_input import _join

# --------------------------------------------------------------------------------------------
# Diagnosis of Avro bodies fastavro could not read (slow path, errors only)
# --------------------------------------------------------------------------------------------


class _Walker:
    """Reads an Avro body by hand to say where and why it is broken."""

    def __init__(self, data: bytes, named: Mapping[str, Any]) -> None:
        self.data = data
        self.pos = 0
        self.named = named

    def take(self, n: int, path: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise _Truncated(path)
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def varint(self, path: str) -> int:
        result = shift = 0
        while True:
            if self.pos >= len(self.data):
                raise _Truncated(path)
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift >= 70:
                raise _Corrupt(path, "variable-length integer longer than 10 bytes")
        if result >> 64:
            raise _Corrupt(path, "variable-length integer overflows 64 bits")
        return (result >> 1) ^ -(result & 1)

    def length(self, path: str) -> int:
        n = self.varint(path)
        if n < 0:
            raise _Corrupt(path, f"negative length {n}")
        return n

    def walk(self, node: Any, path: str) -> None:
        if isinstance(node, str):
            if node in self.named:
                self.walk(self.named[node], path)
            else:
                self.primitive(node, path)
            return
        if isinstance(node, list):
            index = self.varint(path)
            if not 0 <= index < len(node):
                raise _Corrupt(
                    path, f"union branch index {index} is out of range (0..{len(node) - 1})"
                )
            self.walk(node[index], path)
            return
        kind = node["type"]
        if kind in ("record", "error"):
            for f in node["fields"]:
                self.walk(f["type"], _join(path, f["name"]))
        elif kind == "enum":
            symbols = node["symbols"]
            index = self.varint(path)
            if not 0 <= index < len(symbols):
                raise _Corrupt(
                    path,
                    f"enum index {index} is not a symbol of {_type_name(node)} "
                    f"({', '.join(symbols)})",
                )
        elif kind in ("array", "map"):
            count = 0
            while True:
                block = self.varint(path)
                if block == 0:
                    break
                if block < 0:
                    block = -block
                    self.length(path)  # byte size of the block
                for _ in range(block):
                    if kind == "array":
                        self.walk(node["items"], f"{path}[{count}]")
                    else:
                        key = self.string(f"{path}[{count}] (key)")
                        self.walk(node["values"], f"{path}[{key!r}]")
                    count += 1
        elif kind == "fixed":
            self.take(node["size"], path)
        else:
            self.walk(kind, path)

    def string(self, path: str) -> str:
        raw = self.take(self.length(path), path)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Corrupt(
                path, f"string is not valid UTF-8 ({exc.reason} at {exc.start})"
            ) from None

    def primitive(self, kind: str, path: str) -> None:
        if kind == "null":
            return
        if kind == "boolean":
            flag = self.take(1, path)[0]
            if flag > 1:
                raise _Corrupt(path, f"boolean byte 0x{flag:02x} is neither 0 nor 1")
        elif kind == "int":
            value = self.varint(path)
            if not _INT_MIN <= value <= _INT_MAX:
                raise _Corrupt(path, f"{value} is out of range for int")
        elif kind == "long":
            self.varint(path)
        elif kind == "float":
            self.take(4, path)
        elif kind == "double":
            self.take(8, path)
        elif kind == "bytes":
            self.take(self.length(path), path)
        elif kind == "string":
            self.string(path)
        else:
            raise _Corrupt(path, f"unknown type {kind!r}")
