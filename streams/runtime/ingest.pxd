# Cython's augmenting declarations of ingest.py (streams/compiled.py): Python ignores this file.
# The compiled classes are extension types: their attributes C fields (each readable and
# writable from Python, as in the source), their plain methods called without a Python lookup.

cdef class Ingest:
    cdef public object codec, _decode, outputs, clock, repartition_topic, consumed, accepted, dead
    cdef public object repartitioned, schema_resolver, partitions, misrouted
    cdef public dict short_names, _misrouted_warned, _decoded
    cpdef _accept(
        self, object topic, object partition, object offset, object key, object value, object short,
        object expected
    )
    cpdef _record_type(self, object topic, object headers)
    cpdef event_time(
        self, object topic, object value, object headers, object partition=*, object offset=*
    )
    cpdef forget_decoded(self)
    cpdef _report_misrouted(self, object topic, object partition)
    cpdef _reroute(self, object customer_key, object value, object short)
    cpdef _dead_letter(
        self, object topic, object partition, object offset, object key, object value,
        object record_type, object reason_code, object reason
    )
