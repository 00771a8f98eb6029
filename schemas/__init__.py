"""The contract: the records, their Avro schemas and the codec. Importing ``streams`` first puts
the finder of the compiled build in place (``streams/compiled.py``): the codec's ``binary.py`` is
one of its modules, wherever the codec is imported from."""

import streams  # noqa: F401
