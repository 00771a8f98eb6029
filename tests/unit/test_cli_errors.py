"""Odd input on the command line gets one line that says what is wrong, never a traceback."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.ops.cli import main


@pytest.mark.parametrize("certificate", ["missing", "not-pem"])
def test_a_bad_ca_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, certificate: str
) -> None:
    cafile = tmp_path / "ca.pem"
    if certificate == "not-pem":
        cafile.write_text("this is not a certificate\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOURNEY_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("JOURNEY_KAFKA_SSL_CAFILE", str(cafile))
    result = CliRunner().invoke(main, ["topics", "list"])
    assert result.exit_code == 2
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_an_impossible_setting_is_refused_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOURNEY_TIMER_TICK_INTERVAL", "0")
    result = CliRunner().invoke(main, ["topics", "list"])
    assert result.exit_code != 0 and "JOURNEY_TIMER_TICK_INTERVAL" in result.output


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _directory(path: Path) -> Path:
    path.mkdir()
    return path


HEADER = b"record,customer_id,event_id\n"
# name -> (make the input under a tmp dir, exit code, what the one line says)
ODD_FILES: dict[str, tuple[Callable[[Path], Path], int, str]] = {
    "/dev/zero (endless, no line break)": (
        lambda _: Path("/dev/zero"),
        2,
        "error: /dev/zero is not a regular file",
    ),
    "a named pipe (would be read more than once)": (
        lambda d: _fifo(d / "pipe"),
        2,
        "is not a regular file",
    ),
    "a directory": (lambda d: _directory(d / "adir"), 2, "is a directory, not a file"),
    "a missing file": (lambda d: d / "missing.csv", 2, "no such file"),
    "a CSV field over csv.field_size_limit": (
        lambda d: _write(d / "big.csv", HEADER + b'order.placed,"' + b"x" * 200_000 + b'",e1\n'),
        2,
        "line 2: not valid CSV: a field is longer than 131,072 characters",
    ),
    "a CSV quote left open": (
        lambda d: _write(
            d / "open.csv", HEADER + b'order.placed,"c1,e1\n' + b"order,c,e\n" * 20_000
        ),
        2,
        "(is a quote left open?)",
    ),
    "a CSV line over JOURNEY_MAX_VALUE_BYTES": (
        lambda d: _write(d / "long.csv", HEADER + b"order.placed," + b"x," * 1_000_000 + b"e\n"),
        2,
        "line 2 is 2,000,015 bytes, the limit is 1048576 (JOURNEY_MAX_VALUE_BYTES)",
    ),
    "a CSV header that is not UTF-8": (
        lambda d: _write(d / "latin1.csv", "record,n\xe4me\norder.placed,x\n".encode("latin-1")),
        2,
        "line 1: the CSV header is not valid UTF-8",
    ),
    # Row-level problems: the row is rejected with its reason, the others still go (exit 1).
    "a huge JSONL line (no line break for 5 MB)": (
        lambda d: _write(d / "huge.jsonl", b'{"record": "orders", "x": "' + b"x" * 5_000_000),
        1,
        "line 1: too_large: line is 5,000,027 bytes, the limit is 1048576",
    ),
    "a CSV row that is not UTF-8": (
        lambda d: _write(d / "row.csv", HEADER + "order.placed,J\xfcrgen,e1\n".encode("latin-1")),
        1,
        "line 2: bad_csv: row is not valid UTF-8",
    ),
    "a JSONL line that is not UTF-8": (
        lambda d: _write(
            d / "row.jsonl", '{"record": "orders", "c": "J\xfcrgen"}\n'.encode("latin-1")
        ),
        1,
        "line 1: bad_json: not valid JSON: str is not valid UTF-8",
    ),
}


@pytest.mark.parametrize("case", list(ODD_FILES))
def test_odd_import_input_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    make, exit_code, says = ODD_FILES[case]
    path = make(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["import", "--dry-run", str(path)])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == exit_code, result.output
    if exit_code == 2:  # the file cannot be imported: one line says why
        assert result.output.startswith("error: ") and len(result.output.splitlines()) == 1
    assert says in result.output, result.output
