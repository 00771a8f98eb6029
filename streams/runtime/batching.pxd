# Cython's augmenting declarations of batching.py (streams/compiled.py): Python ignores this file.
# The compiled classes are extension types: their attributes C fields (each readable and
# writable from Python, as in the source), their plain methods called without a Python lookup.

cdef class _Open:
    cdef public object builder, delivery, records

cdef class BatchProducer:
    cdef public object _producer, linger, _wake, _task, _refreshed, batches, records, unbatched
    cdef public dict _open, _partitions, on_delivered
    cdef public list _full, _held
    cpdef produce(self, object topic, object key, object value, object headers)
    cpdef append(self, object topic, object partition, object key, object value, object headers)
    cpdef _open_batch(self, object tp)
