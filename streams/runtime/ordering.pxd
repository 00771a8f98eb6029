# Cython's augmenting declarations of ordering.py (streams/compiled.py): Python ignores this file.
# The compiled classes are extension types: their attributes C fields (each readable and
# writable from Python, as in the source), their plain methods called without a Python lookup.

cimport cython

cdef class _Buffered:
    cdef public object item, offset, time_ms, key

cdef class _PartitionGroup:
    cdef public object blocked_since, waited_out
    cdef public dict queues

cdef class EventTimeBuffer:
    cdef public object wait_ms, capacity, end_offset, start_offset, idle_topics, _last_input_ms
    cdef public object sweep_ms, _swept_ms, _size, forced, _pause, _resume, _share, pauses
    cdef public dict rank, _groups, _assigned, _next_offset
    cdef public set paused
    cpdef clear(self)
    @cython.locals(group=_PartitionGroup)
    cpdef push(
        self, object item, object topic, object partition, object offset, object time_ms,
        object now_ms
    )
    @cython.locals(group=_PartitionGroup, buffered=_Buffered)
    cpdef pop_ready(self, object now_ms, object partition=*)
    cpdef drain(self)
    cpdef _take(self, object partition, _PartitionGroup group, object topic, object out)
    cpdef _release_oldest(self, object out)
    cpdef _laggards(self, object partition, _PartitionGroup group)
    cpdef _must_wait(self, _PartitionGroup group, object now_ms, object lagging)

@cython.locals(best=_Buffered, head=_Buffered)
cpdef _oldest_head(_PartitionGroup group)
