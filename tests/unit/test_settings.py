from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.journey.config import JourneyConfig
from streams.settings import Settings, parse_duration_ms, variable_names


def settings(**env: object) -> Settings:
    return Settings(_env_file=None, **env)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("250ms", 250),
        ("45s", 45_000),
        ("30m", 1_800_000),
        ("16h", 57_600_000),
        ("3d", 259_200_000),
        ("1.5h", 5_400_000),
        (2, 2_000),
        ("7", 7_000),
    ],
)
def test_durations(text: object, ms: int) -> None:
    assert parse_duration_ms(text) == ms


def test_contract_defaults() -> None:
    s = settings()
    assert s.journey.abandoned_cart_first_delay == 3_600_000
    assert s.journey.abandoned_cart_second_delay == 24 * 3_600_000
    assert s.journey.frequency_cap == 16 * 3_600_000
    assert s.journey.frequency_cap_drop_after == 72 * 3_600_000
    assert s.journey.win_back_delay == 90 * 86_400_000
    assert s.journey.replay_guard == 86_400_000
    assert (s.journey.quiet_hours_start, s.journey.quiet_hours_end) == (21, 8)
    assert s.journey.sunset_after == 5
    assert s.partitions == 12
    assert s.topic("orders") == "shop.orders"


def test_environment_prefix_and_topic_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNEY_FREQUENCY_CAP", "2h")
    monkeypatch.setenv("JOURNEY_TOPIC_PREFIX", "acme.")
    s = settings()
    assert s.journey.frequency_cap == 7_200_000
    assert s.topic("triggers") == "acme.journey.triggers"
    assert "acme.shop.orders" in s.copartitioned_topics()


def test_settings_are_frozen() -> None:
    with pytest.raises(ValidationError):
        settings().partitions = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad", [{"frequency_cap": "soon"}, {"default_time_zone": "Mars/Olympus"}, {"partitions": 0}]
)
def test_bad_configuration_is_rejected_with_the_field_named(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as info:
        settings(**bad)
    assert next(iter(bad)) in str(info.value)


def test_sasl_options_pass_through_to_aiokafka() -> None:
    s = settings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="shop",
        kafka_sasl_password="s3cret",
    )
    options = s.kafka_client_options()
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_password"] == "s3cret"
    assert "s3cret" not in repr(s)


def test_embedded_clickhouse_by_default_under_local() -> None:
    url = settings().resolved_clickhouse_url()
    assert url.startswith("chdb:///") and url.endswith(".local/chdb")
    assert settings(clickhouse_url="https://ch:8443").resolved_clickhouse_url() == "https://ch:8443"


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("timer_tick_interval", "0", "longer than 0"),
        ("clickhouse_url", "file:///etc/passwd", "chdb://"),
        ("kafka_bootstrap", "kafka-1", "host:port"),
        ("kafka_bootstrap", "kafka-1:notaport", "host:port"),
    ],
)
def test_impossible_settings_are_refused_at_start(field: str, value: str, says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        Settings(_env_file=None, **{field: value})  # type: ignore[arg-type]


def test_printed_urls_carry_no_credentials() -> None:
    from sinks.clickhouse.client import redact_url

    assert redact_url("https://u:s3cret@ch:8443/db") == "https://***@ch:8443/db"
    assert "s3cret" not in redact_url("https://ch:8443/?user=u&password=s3cret")
    assert redact_url("chdb:///var/lib/journey/chdb") == "chdb:///var/lib/journey/chdb"


# --- the nested journey configuration ----------------------------------------------------------
def test_journey_settings_keep_their_flat_variable_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("JOURNEY_FREQUENCY_CAP=3h\nJOURNEY_SUNSET_AFTER=7\n")
    monkeypatch.setenv("JOURNEY_FREQUENCY_CAP", "2h")  # the environment wins over .env
    monkeypatch.setenv("JOURNEY_MAX_ORDERS_KEPT", "3")  # a limit that could not be set before
    monkeypatch.setenv("JOURNEY_QUIET_HOURS_START", "22")
    s = Settings(_env_file=dotenv)  # type: ignore[call-arg]
    assert s.journey.frequency_cap == 7_200_000
    assert s.journey.sunset_after == 7
    assert s.journey.max_orders_kept == 3
    assert s.journey.quiet_hours_start == 22
    assert s.journey.nps_survey_window == 90 * 86_400_000  # the rest keeps its default


def test_journey_keywords_flat_or_nested_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOURNEY_FREQUENCY_CAP", "2h")
    monkeypatch.setenv("JOURNEY_REPLAY_GUARD", "1h")
    assert settings(frequency_cap="5h").journey.frequency_cap == 5 * 3_600_000
    nested = settings(journey={"frequency_cap": "30m"}).journey
    assert (nested.frequency_cap, nested.replay_guard) == (1_800_000, 3_600_000)
    given = JourneyConfig(frequency_cap=60_000)  # in Python, numbers are milliseconds
    assert settings(journey=given).journey == given


@pytest.mark.parametrize(
    "bad",
    [
        {"JOURNEY_QUIET_HOURS_START": "24"},
        {"JOURNEY_SUNSET_AFTER": "0"},
        {"JOURNEY_WIN_BACK_DELAY": "soon"},
        {"JOURNEY_MAX_CARTS_KEPT": "0"},
    ],
)
def test_bad_journey_variables_are_rejected_with_the_setting_named(
    bad: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ((name, value),) = bad.items()
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as info:
        settings()
    assert name.removeprefix("JOURNEY_").lower() in str(info.value)


def test_every_journey_setting_is_a_variable() -> None:
    names = variable_names()
    assert {"JOURNEY_FREQUENCY_CAP", "JOURNEY_MAX_ORDERS_KEPT", "JOURNEY_KAFKA_BOOTSTRAP"} <= names
    assert {f"JOURNEY_{f.name.upper()}" for f in fields(JourneyConfig)} <= names
    assert "JOURNEY_JOURNEY" not in names


def test_the_journey_model_does_not_import_the_process_settings() -> None:
    code = (
        "import sys, streams.journey.model, streams.journey.triggers; "
        "sys.exit('streams.settings' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
