"""The journey worker and the loader at run time: the Faust apps, ingest, the engine, outputs,
acknowledgement, the event-time merge, health and the loader."""
