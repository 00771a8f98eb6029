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
