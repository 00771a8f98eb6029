"""The journey pipeline. Before any of its modules is imported: the compiled build of the hot
modules, where it still matches their source (``streams/compiled.py``)."""

from streams import compiled as _compiled

_compiled.install()
