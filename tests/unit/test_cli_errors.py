"""Odd input on the command line gets one line that says what is wrong, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.cli import main


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
