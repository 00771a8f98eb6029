"""The Schema Registry as the pipeline uses it: from the settings to the codec.

``resolver_for`` gives the ingest what it needs to accept registry-framed values;
``prepare_output_framing`` gives the codec the ids our output records are written with;
``register_schemas`` is ``journey schemas register``. The wire format and the HTTP client are
in ``schemas/registry.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.codec import Codec
from schemas.records import TOPIC_RECORDS
from schemas.registry import RegistryClient, SchemaResolver, subject_for
from streams.settings import Settings

# Records the pipeline writes, by the short name of their topic.
OUTPUT_RECORDS = {
    "triggers": "Trigger",
    "deadletter": "DeadLetter",
    "decisions": "Decision",
    "journey_events": "JourneyEvent",
    "snapshots": "CustomerSnapshot",
    "predictions": "CustomerPrediction",
}


def registry_client(settings: Settings) -> RegistryClient | None:
    if not settings.schema_registry_url:
        return None
    password = settings.schema_registry_password
    return RegistryClient(
        settings.schema_registry_url,
        username=settings.schema_registry_username,
        password=password.get_secret_value() if password else None,
    )


def resolver_for(settings: Settings, codec: Codec) -> SchemaResolver | None:
    client = registry_client(settings)
    if client is None:
        return None
    return SchemaResolver(
        client,
        codec,
        backoff_s=settings.sink_retry_backoff / 1000,
        backoff_max_s=settings.sink_retry_backoff_max / 1000,
    )


def subjects(settings: Settings) -> dict[str, str]:
    """Subject -> record name, for every topic of the contract (TopicNameStrategy)."""
    names = {
        subject_for(settings.topic(short)): TOPIC_RECORDS[short].__name__
        for short in settings.input_topics()
    }
    for short, record in OUTPUT_RECORDS.items():
        names[subject_for(settings.topic(short))] = record
    return names


@dataclass(frozen=True)
class Registered:
    subject: str
    record: str
    version: int
    schema_id: int
    compatible: bool | None  # the registry's check before registering (None: new subject)


async def register_schemas(settings: Settings, codec: Codec) -> list[Registered]:
    """Every released version of each record under its topic's subject, oldest first (so the
    subject's history is ours). Registering an identical schema again keeps its id."""
    client = registry_client(settings)
    if client is None:
        raise ValueError("no schema registry configured: set JOURNEY_SCHEMA_REGISTRY_URL")
    done: list[Registered] = []
    try:
        for subject, record in subjects(settings).items():
            for number in sorted(codec.versions(record)):
                schema = codec.schema_for(record, number)
                known = await client.lookup(subject, schema)
                if known is not None:
                    # Already in the subject's history: checking an old version against a newer
                    # latest (Trigger v1 against v2) would wrongly read as a break.
                    done.append(Registered(subject, record, number, known, True))
                    continue
                compatible = await client.is_compatible(subject, schema)
                schema_id = await client.register(subject, schema)
                done.append(Registered(subject, record, number, schema_id, compatible))
    finally:
        await client.close()
    return done


async def prepare_output_framing(settings: Settings, codec: Codec) -> dict[str, int]:
    """With ``JOURNEY_OUTPUT_FRAMING=confluent``: the ids of our output schemas, handed to the
    codec so that everything the pipeline publishes is written in the registry framing."""
    if settings.output_framing != "confluent":
        return {}
    client = registry_client(settings)
    if client is None:
        raise ValueError(
            "JOURNEY_OUTPUT_FRAMING=confluent needs a schema registry: set "
            "JOURNEY_SCHEMA_REGISTRY_URL"
        )
    ids: dict[str, int] = {}
    try:
        for short, record in OUTPUT_RECORDS.items():
            subject = subject_for(settings.topic(short))
            schema = codec.schema_for(record)
            schema_id = await client.lookup(subject, schema)
            if schema_id is None and settings.schema_registry_auto_register:
                schema_id = await client.register(subject, schema)
            if schema_id is None:
                raise ValueError(
                    f"the {record} schema is not registered under {subject}: run "
                    "`journey schemas register` or set JOURNEY_SCHEMA_REGISTRY_AUTO_REGISTER=true"
                )
            ids[record] = schema_id
    finally:
        await client.close()
    codec.use_output_ids(ids)
    return ids
