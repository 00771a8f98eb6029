"""The journey engine: per-customer state and the decisions of the contract's trigger table.

Pure: nothing here does I/O. ``model.step`` applies an event, ``model.fire_due`` evaluates due
timers; ``triggers`` lists each trigger type with its exit conditions.
"""
