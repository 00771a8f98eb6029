"""The worker's hot modules, compiled with Cython: the same source, about a quarter less CPU.

``MODULES`` are plain Python files, compiled as they are (no Cython types, annotations not
enforced: ``annotation_typing=False``, so a ``StrEnum`` passes where ``str`` is annotated, as in
Python). Measured (bench/README.md, session 22): a fired timer 108-113 -> 79 us of CPU, the
worker's own per-message path (``bench.own_path``) 113-122 -> 86-96 us. One of them,
``schemas/codec/binary.py`` (Avro's binary encoding: what the worker reads and publishes), also
has C code of its own in Cython's pure-Python mode: branches on ``cython.compiled`` and C types
declared with ``cython.locals``, which Python ignores (session 23: an input event read in a
third of fastavro's time, a record written in a fifth of the Python writer's). So has
``streams/runtime/partitioner.py`` (Kafka's murmur2 of a key: 83 ns against aiokafka's 3.3 us).

* **Classes as extension types** (``streams/runtime/*.pxd``, session 27). A module's augmenting
  ``.pxd`` beside it (``engine.pxd`` for ``engine.py``) declares its hot classes ``cdef class``:
  every attribute a C field (``public``: read and written from Python as the source does; a
  plain ``dict``, ``list`` or ``set`` typed as such), the plain methods ``cpdef`` (called from
  compiled code without a lookup). Python ignores the file, so the pure modules are unchanged.
  What changes when compiled: an instance takes no attribute the ``.pxd`` does not declare,
  and a method cannot be replaced on an instance (nothing does either). Compiled code reads
  ``self.x`` as a C field instead of through ``PyObject_GenericGetAttr`` (about 150
  instructions, 245 times per message before: 21 % of ``bench.own_path``), and builds the
  small per-message objects (the engine's ``_Prepared``, the merge's ``_Buffered``: plain
  classes, not dataclasses, whose generated ``__init__`` ran interpreted) in C. Counted by
  ``bench.instructions``: 198,700 -> 172,300 per fired timer, 198,200 -> 164,800 per message.
  A ``.pxd`` only types its own module's classes (no ``cimport`` of another module's: a stale
  module run as Python would then break the import of the compiled one that needs its type).
  The build's digest of a module covers its ``.pxd``: an edited one is stale like an edited
  source.

* **Build**: ``journey compile`` (``make compile``; ``make run``, ``make test`` and
  ``make bench`` run it first) writes one extension per module into ``streams/_compiled/``
  and a manifest with the SHA-256 of each source it compiled. Only changed sources are compiled
  again. It needs Cython (a dependency) and a C compiler; without one, the pure modules run.
* **Loading**: ``install()`` (``streams/__init__.py``, which ``schemas/__init__.py`` imports, so
  before any of them is imported) puts a finder in front of Python's: a module of the manifest
  is loaded from its extension **only if its source is still the one compiled**. A source
  edited since (or a build for another Python) runs as the source says (every ``journey``
  command warns: build again): a stale build never decides anything.
* ``JOURNEY_COMPILED=0`` runs the pure Python modules whatever is built (profiling with py-spy,
  which sees no frames of compiled code; or to rule the compiled code out).

Not compiled: what Faust inspects or drives (``app.py``'s agents, ``handover.py``'s coroutine
hand-over): little of the CPU, and compiled coroutines behave differently where Faust looks.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

# The per-message and per-timer path (engine.py's docstring): the model, what the engine runs
# for every event and fired timer, and the Avro writer of what it publishes. Module names, of
# the packages beside ``streams`` (``schemas/__init__.py`` installs the finder too).
MODULES = (
    "schemas.bounds",
    "schemas.codec.binary",
    "streams.journey.decisions",
    "streams.journey.model",
    "streams.journey.state",
    "streams.journey.triggers",
    "streams.runtime.acks",
    "streams.runtime.batching",
    "streams.runtime.engine",
    "streams.runtime.facts",
    "streams.runtime.ingest",
    "streams.runtime.intake",
    "streams.runtime.ordering",
    "streams.runtime.outputs",
    "streams.runtime.partitioner",
)
PACKAGE_DIR = Path(__file__).resolve().parent  # streams/
BUILD_DIR = PACKAGE_DIR / "_compiled"
DISABLE_ENV = "JOURNEY_COMPILED"
# Cython's directives: Python's semantics, only compiled.
DIRECTIVES = {"language_level": "3", "annotation_typing": "False", "binding": "True"}


def _ext_suffix() -> str:
    return str(sysconfig.get_config_var("EXT_SUFFIX") or ".so")


def manifest_path(build_dir: Path = BUILD_DIR) -> Path:
    """One manifest per Python ABI (``manifest.cpython-311-x86_64-linux-gnu.json``)."""
    return build_dir / f"manifest{Path(_ext_suffix()).stem}.json"


def source_of(module: str, root: Path) -> Path:
    """``root`` holds the top package: ``streams.journey.model`` is ``streams/journey/model.py``."""
    return root.joinpath(*module.split(".")).with_suffix(".py")


def build_key() -> str:
    """What else a build depends on than the source: Cython's version and directives. A build
    made with others is compiled again."""
    try:
        cython = importlib.metadata.version("cython")
    except importlib.metadata.PackageNotFoundError as exc:
        raise BuildError("Cython is not installed (a dependency: pip install cython)") from exc
    return json.dumps({"cython": cython, "directives": DIRECTIVES}, sort_keys=True)


def declarations_of(source: Path) -> Path:
    """The module's augmenting ``.pxd`` beside it (``engine.py``: ``engine.pxd``), if it has one."""
    return source.with_suffix(".pxd")


def digest(source: Path) -> str:
    """The SHA-256 of what a build compiles: the source, and its ``.pxd`` when it has one (a
    changed declaration is a changed build)."""
    sha = hashlib.sha256(source.read_bytes())
    pxd = declarations_of(source)
    if pxd.exists():
        sha.update(b"\0pxd\0" + pxd.read_bytes())
    return sha.hexdigest()


def disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() in {"0", "false", "no", "off"}


@dataclass
class Status:
    """What ``install`` found: the modules loaded from their extension, those whose source
    changed since the build (run as the source says), and whether compiled code is off."""

    compiled: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    disabled: bool = False
    built: bool = False  # a manifest for this Python exists

    def summary(self) -> str:
        if self.disabled:
            return f"compiled modules off ({DISABLE_ENV}=0): pure Python"
        if not self.built:
            return "compiled modules not built (make compile): pure Python"
        text = f"{len(self.compiled)} modules compiled (Cython)"
        if self.stale:
            text += (
                f"; changed since the build, run as Python: {', '.join(self.stale)} "
                "(`make compile` builds them again)"
            )
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "compiled": self.compiled, "stale": self.stale, "disabled": self.disabled,
            "built": self.built,
        }  # fmt: skip


class _Finder(importlib.abc.MetaPathFinder):
    """Loads the modules of ``built`` from their extension; every other import is Python's."""

    def __init__(self, built: dict[str, Path]) -> None:
        self.built = built

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        extension = self.built.get(fullname)
        if extension is None:
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, str(extension))
        return importlib.util.spec_from_file_location(fullname, extension, loader=loader)


def check(
    root: Path = PACKAGE_DIR.parent, build_dir: Path = BUILD_DIR
) -> tuple[Status, dict[str, Path]]:
    """Which modules of the build in ``build_dir`` still match their source under ``root``."""
    status = Status(disabled=disabled())
    manifest = manifest_path(build_dir)
    if status.disabled or not manifest.exists():
        status.built = manifest.exists()
        return status, {}
    status.built = True
    try:
        entries: dict[str, dict[str, str]] = json.loads(manifest.read_text())["modules"]
    except (OSError, ValueError, KeyError, TypeError):
        return status, {}  # unreadable: nothing compiled is trusted
    built: dict[str, Path] = {}
    for module, entry in sorted(entries.items()):
        source = source_of(module, root)
        extension = build_dir / entry["extension"]
        try:
            current = digest(source)
        except OSError:
            continue
        if current == entry["sha256"] and extension.exists():
            built[module] = extension
            status.compiled.append(module)
        else:
            status.stale.append(module)
    return status, built


_status = Status()


def install(root: Path = PACKAGE_DIR.parent, build_dir: Path = BUILD_DIR) -> Status:
    """Put the finder of the current build in front of Python's (once per process)."""
    global _status
    status, built = check(root, build_dir)
    _status = status
    if built and not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder(built))
    return status


def status() -> Status:
    """What this process runs: ``install``'s finding (``loaded_compiled``: what it imported)."""
    return _status


def loaded_compiled() -> list[str]:
    """The modules of ``MODULES`` this process imported from an extension."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return sorted(
        name
        for name in MODULES
        if (module := sys.modules.get(name)) is not None
        and str(getattr(module, "__file__", "")).endswith(suffixes)
    )


# --- build ------------------------------------------------------------------------------------
def _compile_one(module: str, source: Path, build_dir: Path, work: Path) -> str:
    """Cython, then the C compiler, into ``build_dir``; returns the extension's file name."""
    c_file = work / f"{module}.c"
    directives = [f"-X{k}={v}" for k, v in DIRECTIVES.items()]
    subprocess.run(
        [sys.executable, "-m", "cython", *directives, "--module-name", module, "-o", str(c_file),
         str(source)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    name = f"{module}{_ext_suffix()}"
    temporary = work / name
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")
    ldshared = shlex.split(sysconfig.get_config_var("LDSHARED") or f"{cc[0]} -shared")
    include = sysconfig.get_paths()["include"]
    flags = ["-O2", "-fPIC", "-fwrapv", "-DNDEBUG", f"-I{include}"]
    objects = work / f"{module}.o"
    subprocess.run(
        [*cc, *flags, "-c", str(c_file), "-o", str(objects)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    subprocess.run(
        [*ldshared, str(objects), "-o", str(temporary)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    os.replace(temporary, build_dir / name)
    return name


def build(
    modules: Sequence[str] = MODULES,
    root: Path = PACKAGE_DIR.parent,
    build_dir: Path = BUILD_DIR,
    jobs: int | None = None,
) -> tuple[list[str], list[str]]:
    """Compile the modules whose source changed since the last build; the manifest is written
    last, with the sources' hashes as read before compiling (a source edited meanwhile is
    stale at once). Returns (compiled now, unchanged). Raises ``BuildError`` if one fails."""
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # e.g. an installed package's read-only directory
        raise BuildError(f"cannot write the build into {build_dir}: {exc}") from exc
    manifest = manifest_path(build_dir)
    key = build_key()
    try:
        found = json.loads(manifest.read_text())
        previous: dict[str, dict[str, str]] = found["modules"] if found["key"] == key else {}
    except (OSError, ValueError, KeyError, TypeError):
        previous = {}
    entries: dict[str, dict[str, str]] = {}
    todo: list[tuple[str, Path, str]] = []
    for module in modules:
        source = source_of(module, root)
        sha = digest(source)
        entry = previous.get(module)
        if entry and entry["sha256"] == sha and (build_dir / entry["extension"]).exists():
            entries[module] = entry
        else:
            todo.append((module, source, sha))
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="journey-compile-") as tmp:

        def one(item: tuple[str, Path, str]) -> None:
            module, source, sha = item
            try:
                name = _compile_one(module, source, build_dir, Path(tmp))
            except (OSError, subprocess.CalledProcessError) as exc:
                output = getattr(exc, "stderr", None) or str(exc)
                failed.append(f"{module}: {output.strip()[-2000:]}")
                return
            entries[module] = {"sha256": sha, "extension": name}

        with ThreadPoolExecutor(jobs or os.cpu_count() or 1) as pool:
            list(pool.map(one, todo))
    # Replaced whole: a process starting meanwhile reads the old manifest or the new one (an
    # unreadable one would trust nothing, safe but slow).
    written = manifest.with_suffix(f".{os.getpid()}.tmp")
    written.write_text(
        json.dumps({"python": sys.version.split()[0], "key": key,
                    "modules": dict(sorted(entries.items()))}, indent=2) + "\n"
    )  # fmt: skip
    os.replace(written, manifest)
    # Extensions of this Python that the manifest no longer lists (a module taken off the list,
    # or one that failed): never loaded, and not left lying about.
    kept = {entry["extension"] for entry in entries.values()}
    for path in build_dir.glob(f"*{_ext_suffix()}"):
        if path.name not in kept:
            path.unlink(missing_ok=True)
    if failed:
        raise BuildError("\n".join(failed))
    done = {module for module, _, _ in todo}
    return sorted(done), sorted(set(modules) - done)


class BuildError(Exception):
    """A module could not be compiled (no C compiler, no Cython, a compiler error)."""
