"""``python -m bench.own_path``: the worker's own per-message path in one process."""

from __future__ import annotations

import pytest

from bench import own_path


async def test_every_message_goes_through_and_its_records_come_out(
    capsys: pytest.CaptureFixture[str],
) -> None:
    await own_path.run(3_000, profile=False)
    out = capsys.readouterr().out
    assert out.startswith("3,000 messages: ")
    assert "'journey.events': 3000" in out  # each accepted event published once, canonical
    assert "snapshots not encodable 0" in out
