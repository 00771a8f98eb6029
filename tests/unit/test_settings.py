from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.settings import Settings, parse_duration_ms


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
    assert s.abandoned_cart_first_delay == 3_600_000
    assert s.abandoned_cart_second_delay == 24 * 3_600_000
    assert s.frequency_cap == 16 * 3_600_000
    assert s.frequency_cap_drop_after == 72 * 3_600_000
    assert s.win_back_delay == 90 * 86_400_000
    assert s.replay_guard == 86_400_000
    assert (s.quiet_hours_start, s.quiet_hours_end, s.sunset_after) == (21, 8, 5)
    assert s.partitions == 12
    assert s.topic("orders") == "shop.orders"


def test_environment_prefix_and_topic_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNEY_FREQUENCY_CAP", "2h")
    monkeypatch.setenv("JOURNEY_TOPIC_PREFIX", "acme.")
    s = settings()
    assert s.frequency_cap == 7_200_000
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
