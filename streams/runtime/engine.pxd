# Cython's augmenting declarations of engine.py (streams/compiled.py): Python ignores this file.
# The compiled classes are extension types: their attributes C fields (each readable and
# writable from Python, as in the source), their plain methods called without a Python lookup.

cimport cython

cdef class TimerIndex:
    cdef public dict _heaps, _due, _next
    cpdef set(self, object partition, object customer_id, object fire_at)
    cpdef pop_due(self, object partition, object now)

cdef class _Outgoing:
    cdef public object seq, decision, trigger, resend

cdef class _Prepared:
    cdef public object state, partition, value, outbox_at, next_fire, snapshot, event, erase
    cdef public object changed
    cdef public list outgoing, decided

cdef class JourneyEngine:
    cdef public object table, _write, _read, state_writes, outputs, codec
    cdef public dict _dirty, _taken
    cdef public object _encode_decision, _encode_trigger, _encode_event, config, clock
    cdef public object observe_lateness, on_failure, _cache, _cache_size
    cdef public TimerIndex index
    cdef public dict _live
    cdef public object _live_size, live_hits, resent, decisions
    cdef public dict _sent, _durable, _visit
    cdef public object recent, timer_lateness_ms, rebuilds, last_rebuild
    cpdef load(self, object customer_id, object partition=*)
    cpdef _stored(self, object customer_id, object partition=*)
    cpdef _store(
        self, object partition, object customer_id, object value, object next_fire,
        object outbox_at=*
    )
    cpdef _prepare(
        self, object state, object decisions, object now, object partition, object snapshot=*,
        object published=*
    )
    cpdef _shows(self, object state, object now)
    @cython.locals(out=_Outgoing)
    cpdef _commit(self, _Prepared prepared, object live=*)
    cpdef _drop_durable(self, object customer_id, object value, object outbox_at)
    cpdef _became_durable(self, object customer_id, object partition, object seq)
