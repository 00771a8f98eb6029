# Cython's augmenting declarations of acks.py (streams/compiled.py): Python ignores this file.
# The compiled classes are extension types: their attributes C fields (each readable and
# writable from Python, as in the source), their plain methods called without a Python lookup.

cdef class Acks:
    cdef public object interval, max_pending, on_fatal, _records, ack_events, _lock, _wake, _room
    cdef public object _task, _failing, _stopping, acked
    cdef public list on_take, before_flush, after_deliveries, _callbacks, _events, _durable
    cdef public dict _pending
    cpdef wait_for(self, object delivery)
    cpdef after(self, object callback)
    cpdef after_event(self, object event)
    cpdef durable(self, object callback)
    cpdef wake(self)
    cpdef start(self)
