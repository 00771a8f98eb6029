"""The compiled build of the hot modules (streams/compiled.py): what runs is what the source says.

Each test compiles a small package of its own (Cython and the C compiler, a few seconds)."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams import compiled

HOT = """
from enum import StrEnum


class Kind(StrEnum):
    CART = "cart"


def label(kind: str, count: int) -> str:
    # Annotated str, given a StrEnum: Python accepts it, so must the compiled module.
    match count:
        case 0:
            return f"no {kind}"
        case _:
            return f"{count} x {kind}"


def answer() -> str:
    return label(Kind.CART, 2)
"""


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A package of its own under ``tmp_path`` with the module ``hot``: (its name, root)."""
    monkeypatch.delenv(compiled.DISABLE_ENV, raising=False)  # (make unit's second run sets it)
    name = f"hotpkg_{uuid.uuid4().hex[:8]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "hot.py").write_text(HOT)
    sys.path.insert(0, str(tmp_path))
    finders = list(sys.meta_path)
    try:
        yield name, tmp_path
    finally:
        sys.path.remove(str(tmp_path))
        sys.meta_path[:] = finders
        for module in [m for m in sys.modules if m.split(".")[0] == name]:
            del sys.modules[module]


def _import_with(built: dict[str, Path], module: str) -> object:
    """A fresh process's import of ``module`` with ``built`` (the finder ``install`` puts)."""
    sys.modules.pop(module, None)
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, compiled._Finder)]
    sys.meta_path.insert(0, compiled._Finder(built))
    importlib.invalidate_caches()
    return importlib.import_module(module)


def test_a_build_is_loaded_while_its_source_is_unchanged_and_never_after(
    package: tuple[str, Path],
) -> None:
    name, root = package
    module, out = f"{name}.hot", root / "_compiled"
    assert compiled.build([module], root=root, build_dir=out, jobs=1) == ([module], [])
    status, built = compiled.check(root, out)
    assert status.compiled == [module] and not status.stale
    hot = _import_with(built, module)
    assert str(hot.__file__).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))
    assert hot.answer() == "2 x cart"  # type: ignore[attr-defined]
    # A second build compiles nothing: the source is the one compiled.
    assert compiled.build([module], root=root, build_dir=out, jobs=1) == ([], [module])
    # Another Cython or other directives: compiled again.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(compiled, "DIRECTIVES", {**compiled.DIRECTIVES, "binding": "False"})
        assert compiled.build([module], root=root, build_dir=out, jobs=1) == ([module], [])
    assert compiled.build([module], root=root, build_dir=out, jobs=1) == ([module], [])

    # The source is edited after the build: the build is stale, the module runs as written.
    source = root / name / "hot.py"
    source.write_text(HOT.replace('"2 x cart"', '"x"').replace("label(Kind.CART, 2)", '"edited"'))
    status, built = compiled.check(root, out)
    assert status.stale == [module] and not status.compiled and built == {}
    assert "run as Python" in status.summary()
    hot = _import_with(built, module)
    assert str(hot.__file__).endswith(".py")
    assert hot.answer() == "edited"  # type: ignore[attr-defined]


COUNTER = """
class Counter:
    def __init__(self) -> None:
        self.count = 0

    def add(self, short: int) -> int:
        self.count += short
        return self.count
"""
COUNTER_PXD = """
cdef class Counter:
    cdef public object count
    cpdef add(self, object short)
"""


def test_a_modules_pxd_makes_its_class_an_extension_type_and_is_part_of_the_build(
    package: tuple[str, Path],
) -> None:
    """An augmenting ``.pxd`` beside a module (``streams/runtime/*.pxd``) is compiled with it: its
    class becomes an extension type that behaves as the source says (attributes read and written
    from Python, no others), and an edited ``.pxd`` makes the build stale like an edited source."""
    name, root = package
    module, out = f"{name}.counter", root / "_compiled"
    (root / name / "counter.py").write_text(COUNTER)
    pxd = root / name / "counter.pxd"
    pxd.write_text(COUNTER_PXD)
    assert compiled.build([module], root=root, build_dir=out, jobs=1) == ([module], [])
    status, built = compiled.check(root, out)
    assert status.compiled == [module]
    counter = _import_with(built, module).Counter()  # type: ignore[attr-defined]
    assert not hasattr(counter, "__dict__")  # an extension type: its fields are C fields
    assert counter.add(2) == 2 and counter.add(3) == 5  # (an argument named like a C type)
    counter.count = 10  # written from Python, as in the source
    assert counter.add(1) == 11
    with pytest.raises(AttributeError):
        counter.other = 1  # type: ignore[attr-defined]
    # The declarations change, the source does not: stale, compiled again.
    pxd.write_text(COUNTER_PXD.replace("cpdef add(self, object short)", ""))
    status, built = compiled.check(root, out)
    assert status.stale == [module] and built == {}
    assert compiled.build([module], root=root, build_dir=out, jobs=1) == ([module], [])
    # So does taking the .pxd away (an extension, once imported, is not imported again by this
    # process: the build's outcome is what is checked).
    pxd.unlink()
    assert compiled.check(root, out)[0].stale == [module]
    assert compiled.build([module], root=root, build_dir=out, jobs=1) == ([module], [])


def test_off_runs_python_whatever_is_built(
    package: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, root = package
    module, out = f"{name}.hot", root / "_compiled"
    compiled.build([module], root=root, build_dir=out, jobs=1)
    monkeypatch.setenv(compiled.DISABLE_ENV, "0")
    status, built = compiled.check(root, out)
    assert status.disabled and built == {} and "pure Python" in status.summary()


def test_a_module_that_does_not_compile_fails_the_build_and_is_not_trusted(
    package: tuple[str, Path],
) -> None:
    name, root = package
    module, out = f"{name}.hot", root / "_compiled"
    (root / name / "hot.py").write_text("def broken(:\n")
    with pytest.raises(compiled.BuildError, match=module):
        compiled.build([module], root=root, build_dir=out, jobs=1)
    status, built = compiled.check(root, out)
    assert built == {} and status.compiled == []


def test_a_module_taken_off_the_list_leaves_no_extension_behind(
    package: tuple[str, Path],
) -> None:
    name, root = package
    (root / name / "other.py").write_text("VALUE = 1\n")
    hot, other, out = f"{name}.hot", f"{name}.other", root / "_compiled"
    compiled.build([hot, other], root=root, build_dir=out, jobs=1)
    suffix = compiled._ext_suffix()
    assert sorted(p.name for p in out.glob(f"*{suffix}")) == [f"{hot}{suffix}", f"{other}{suffix}"]
    assert compiled.build([hot], root=root, build_dir=out, jobs=1) == ([], [hot])
    assert [p.name for p in out.glob(f"*{suffix}")] == [f"{hot}{suffix}"]
    assert compiled.check(root, out)[0].compiled == [hot]


def test_a_build_directory_that_cannot_be_made_is_a_clear_error(
    package: tuple[str, Path],
) -> None:
    name, root = package
    (root / "a-file").write_text("")
    with pytest.raises(compiled.BuildError, match="cannot write the build"):
        compiled.build([f"{name}.hot"], root=root, build_dir=root / "a-file" / "_compiled")


def test_an_unreadable_manifest_trusts_nothing(package: tuple[str, Path]) -> None:
    name, root = package
    module, out = f"{name}.hot", root / "_compiled"
    compiled.build([module], root=root, build_dir=out, jobs=1)
    manifest = compiled.manifest_path(out)
    manifest.write_text("{not json")
    assert compiled.check(root, out)[1] == {}
    manifest.write_text(json.dumps({"modules": {}}))
    assert compiled.check(root, out)[1] == {}


@pytest.mark.skipif(
    os.environ.get("JOURNEY_EXPECT_COMPILED") != "1",
    reason="make unit's first run (JOURNEY_EXPECT_COMPILED=1) checks it runs the compiled build",
)
def test_the_unit_tests_run_the_compiled_modules() -> None:
    for module in compiled.MODULES:
        importlib.import_module(module)
    assert compiled.status().compiled == sorted(compiled.MODULES)
    assert compiled.loaded_compiled() == sorted(compiled.MODULES)


def test_as_python_when_asked() -> None:
    """``make unit``'s second run (JOURNEY_COMPILED=0) runs every module as Python."""
    if not compiled.disabled():
        pytest.skip("only in the run with JOURNEY_COMPILED=0")
    for module in compiled.MODULES:
        importlib.import_module(module)
    assert compiled.loaded_compiled() == []
