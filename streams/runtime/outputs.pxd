# Cython's augmenting declarations of outputs.py (streams/compiled.py): Python ignores this file.
# The compiled classes are extension types: their attributes C fields (each readable and
# writable from Python, as in the source), their plain methods called without a Python lookup.

cdef class Outputs:
    cdef public object produce, acks, triggers, decisions, events, snapshots, deadletters
    cdef public object repartition_topic, encode_snapshot, unencodable_snapshots
    cdef public dict _snapshots, sent
    cpdef trigger(self, object key, object value)
    cpdef decision(self, object key, object value)
    cpdef event(self, object key, object value)
    cpdef snapshot(self, object key, object snapshot)
    cpdef erased(self, object key)
    cpdef dead_letter(self, object key, object value)
    cpdef repartition(self, object key, object value, object headers)
