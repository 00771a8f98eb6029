# Cython's augmenting declarations of intake.py (streams/compiled.py): Python ignores this file.
# The compiled classes are extension types: their attributes C fields (each readable and
# writable from Python, as in the source).

cdef class MessageHandler:
    cdef public object ingest, engine, ticks_topic, crash

cdef class Intake:
    cdef public object ingest, ordering, apply, acks, ticks_topic, turns, processing
    cdef public dict positions
