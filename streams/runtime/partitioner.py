"""Kafka's default partitioner's hash of a key: murmur2, as the Java client's ``Utils.murmur2``
and aiokafka's ``murmur2``. The worker hashes every input event's key (is it on its key's
partition?) and every record it publishes (which partition?).

aiokafka's is pure Python, about 3 us a key: as Python the hashes of the last 262,144 keys are
kept (a customer's key comes again and again), which a shop with more customers than that misses
on nearly every record. Compiled (``streams/compiled.py``), ``murmur2`` runs in C (Cython's
pure-Python mode: the ``cython.compiled`` branch), faster than looking a key up in that cache,
so the compiled worker keeps none. Both give the Java client's hashes
(``tests/unit/test_partitioning.py``: Kafka's own test vectors, and aiokafka's hash of random
keys).
"""

from __future__ import annotations

import functools

import cython
from aiokafka.partitioner import murmur2 as _aiokafka_murmur2

if cython.compiled:  # the C API: only the compiled module runs these imports
    from cython.cimports.cpython.bytes import PyBytes_AS_STRING, PyBytes_GET_SIZE

COMPILED: bool = cython.compiled  # this module runs compiled (else as Python)
_M = cython.declare(cython.uint, 0x5BD1E995)
KEYS_KEPT = 1 << 18  # as Python: the keys whose hash is kept
_kept_murmur2 = functools.lru_cache(maxsize=KEYS_KEPT)(_aiokafka_murmur2)


@cython.locals(data=cython.p_const_uchar, length=cython.Py_ssize_t, h=cython.uint,
               k=cython.uint, i=cython.Py_ssize_t, tail=cython.Py_ssize_t)  # fmt: skip
def murmur2(key: bytes) -> int:
    """The unsigned 32-bit murmur2 of ``key`` (seed 0x9747B28C)."""
    if not isinstance(key, bytes):  # (a bytearray: not read in place, nor kept)
        return int(_aiokafka_murmur2(key))
    if not cython.compiled:
        return int(_kept_murmur2(key))
    data = cython.cast(cython.p_const_uchar, PyBytes_AS_STRING(key))
    length = PyBytes_GET_SIZE(key)
    h = cython.cast(cython.uint, 0x9747B28C) ^ cython.cast(cython.uint, length)
    i = 0
    while i + 4 <= length:
        k = (
            cython.cast(cython.uint, data[i])
            | (cython.cast(cython.uint, data[i + 1]) << 8)
            | (cython.cast(cython.uint, data[i + 2]) << 16)
            | (cython.cast(cython.uint, data[i + 3]) << 24)
        )
        k *= _M
        k ^= k >> 24
        k *= _M
        h *= _M
        h ^= k
        i += 4
    tail = length & 3
    if tail >= 3:
        h ^= cython.cast(cython.uint, data[i + 2]) << 16
    if tail >= 2:
        h ^= cython.cast(cython.uint, data[i + 1]) << 8
    if tail >= 1:
        h ^= cython.cast(cython.uint, data[i])
        h *= _M
    h ^= h >> 13
    h *= _M
    h ^= h >> 15
    return h
